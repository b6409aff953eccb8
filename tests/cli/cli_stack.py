"""The whole local stack (services/allinone/stack.py: scripts, watcher, worker with FreeCAD,
gateway) on the session's moto server, a nats-server and mongomock of its own, running in a
thread with its own event loop, so that the tests can drive the `cadpipe` command as a real
subprocess while the servers answer. The tests may import the services; the command may not.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cadpipe.adapters import s3
from cadpipe.devstack import MotoS3, NatsServer
from cadpipe.settings import S3Settings
from services.allinone import stack

CADPIPE = pathlib.Path(sys.executable).parent / "cadpipe"
"""The console script pyproject.toml installs (make test installs it into .venv)."""
SAMPLES = pathlib.Path(__file__).parent.parent / "samples"


@dataclass(frozen=True)
class RunningStack:
    url: str
    token: str
    admin_token: str


@contextmanager
def running_stack(moto: MotoS3, overrides: stack.Overrides | None = None) -> Iterator[RunningStack]:
    unique = uuid.uuid4().hex[:10]
    s3_fields = moto.s3_fields(f"cadpipe-cli-{unique}")
    s3.Bucket(s3.make_client(S3Settings(**s3_fields)), s3_fields["s3_bucket"]).create_if_missing()
    with NatsServer() as nats:
        backends = stack.Backends(
            s3=s3_fields,
            nats_url=nats.url,
            mongodb_uri=f"mongomock://cli-{unique}",
            mongodb_database=f"cadpipe_cli_{unique}",
        )
        ready = threading.Event()
        started: dict[str, Any] = {}

        async def serve() -> None:
            stop = asyncio.Event()
            started["stop"] = (asyncio.get_running_loop(), stop)
            try:
                async with stack.start(
                    backends, overrides=overrides or stack.Overrides()
                ) as running:
                    started["stack"] = running
                    ready.set()
                    await stop.wait()
            except BaseException as exc:
                started["error"] = exc
                ready.set()
                raise

        thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
        thread.start()
        assert ready.wait(60), "the stack did not start within 60 s"
        if "error" in started:
            raise RuntimeError("the stack failed to start") from started["error"]
        running = started["stack"]
        try:
            yield RunningStack(running.api_url, running.user_token, running.admin_token)
        finally:
            loop, stop = started["stop"]
            loop.call_soon_threadsafe(stop.set)
            thread.join(30)


def cli_env(home: pathlib.Path, url: str | None, token: str | None) -> dict[str, str]:
    """The environment of a user with an empty home: no config file unless a test writes one,
    CADPIPE_URL/CADPIPE_TOKEN as given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADPIPE_")}
    env.pop("NO_COLOR", None)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        PYTHONUNBUFFERED="1",
        COLUMNS="120",
    )
    if url is not None:
        env["CADPIPE_URL"] = url
    if token is not None:
        env["CADPIPE_TOKEN"] = token
    return env


def run_cli(
    *args: str | pathlib.Path,
    env: dict[str, str],
    cwd: pathlib.Path | None = None,
    timeout: float = 120,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CADPIPE), *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        check=False,
    )
