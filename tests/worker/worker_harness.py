"""Helpers for the worker's tests: put a script in the bucket and announce it as the script
service does, wait for the marker, read what the worker stored, run a worker as a process."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

from cadpipe import layout, messaging
from cadpipe.adapters import s3
from cadpipe.devstack import free_port
from cadpipe.ownership import S3_OWNER_METADATA
from cadpipe.settings import NatsSettings, S3Settings
from cadpipe.v1 import events_pb2
from services.worker.settings import Settings

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
REPO = Path(__file__).resolve().parents[2]
FREECAD_PYTHON = "/usr/bin/python3"
FREECAD_LIB = "/usr/lib/freecad/lib"

STL_SCRIPT = """\
import os
with open(os.path.join(os.environ["FREECAD_OUTPUT"], "tiny.stl"), "w") as f:
    f.write("solid t\\nfacet normal 0 0 1\\nouter loop\\nvertex 0 0 0\\nvertex 1 0 0\\n"
            "vertex 0 1 0\\nendloop\\nendfacet\\nendsolid t\\n")
"""
"""A script that finishes in milliseconds with one output (no FreeCAD needed)."""

SLOW_SCRIPT = "import time\ntime.sleep({seconds})\n" + STL_SCRIPT
"""STL_SCRIPT after a sleep of `seconds` (format it): a job that takes time and no CPU."""


def settings_for(
    s3_settings: S3Settings, nats_settings: NatsSettings, scratch_root: str, **extra: Any
) -> Settings:
    """An in-process worker's settings on the test's S3 and NATS, gRPC on a free port."""
    return Settings(
        **s3_settings.model_dump(),
        nats_url=nats_settings.nats_url,
        grpc_host="127.0.0.1",
        grpc_port=0,
        scratch_root=scratch_root,
        **extra,
    )


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def upload(bucket: s3.Bucket, project: str, version: int, body: bytes, owner: str = "") -> bytes:
    """Stores the script as the script service would (its owner in the object's metadata),
    and returns its uploaded event."""
    key = layout.script_key(project, version)
    bucket.put(
        key,
        body,
        content_type=layout.SCRIPT_CONTENT_TYPE,
        metadata={S3_OWNER_METADATA: owner} if owner else None,
    )
    event = events_pb2.ScriptUploaded(
        project=project,
        version=version,
        key=key,
        sha256=hashlib.sha256(body).hexdigest(),
        size_bytes=len(body),
        owner=owner,
    )
    return messaging.encode(event)


async def announce(js: JetStreamContext, project: str, version: int, event: bytes) -> None:
    """Publishes an uploaded event as the script service's outbox does."""
    await js.publish(
        messaging.uploaded_subject(project),
        event,
        headers={"Nats-Msg-Id": messaging.uploaded_msg_id(project, version)},
    )


async def submit(
    js: JetStreamContext,
    bucket: s3.Bucket,
    project: str,
    version: int,
    body: bytes,
    owner: str = "",
) -> None:
    await announce(js, project, version, upload(bucket, project, version, body, owner))


async def wait_marker(
    bucket: s3.Bucket, project: str, version: int, within: float = 20.0
) -> dict[str, Any]:
    """The marker's JSON body, once the worker has written it."""
    key = layout.marker_key(project, version)
    deadline = time.monotonic() + within
    while True:
        stored = await asyncio.to_thread(bucket.get, key)
        if stored is not None:
            return dict(json.loads(stored.body))
        if time.monotonic() > deadline:
            raise TimeoutError(f"no marker for {project} v{version} after {within} s")
        await asyncio.sleep(0.05)


def read_text(bucket: s3.Bucket, key: str) -> str:
    stored = bucket.get(key)
    assert stored is not None, f"{key} is not in the bucket"
    return stored.body.decode()


def keys(bucket: s3.Bucket, prefix: str) -> list[str]:
    return [o.key for o in bucket.list(prefix)]


def log_uid(log: str) -> int:
    match = re.search(r"own uid (\d+)", log)
    assert match, "the log does not name the job's uid"
    return int(match.group(1))


def processes_of(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found.append(int(entry))
            except FileNotFoundError:
                continue
    return found


def installed_freecad_version() -> str:
    """The FreeCAD this machine has ("0.20.2" on Debian 12, "1.0.0" on Debian 13)."""
    code = (
        f"import sys; sys.path.append({FREECAD_LIB!r}); import FreeCAD\n"
        "print('.'.join(FreeCAD.Version()[:3]))\n"
    )
    out = subprocess.run(
        [FREECAD_PYTHON, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.strip().splitlines()[-1]


def step_volume(body: bytes, tmp: Path) -> float:
    """Volume of the solids in a STEP file, read back by FreeCAD in a process of its own."""
    path = tmp / "reimport.step"
    path.write_bytes(body)
    code = (
        f"import sys; sys.path.append({FREECAD_LIB!r}); import FreeCAD, Part\n"
        f"print(sum(s.Volume for s in Part.read({str(path)!r}).Solids))\n"
    )
    out = subprocess.run(
        [FREECAD_PYTHON, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


class WorkerProcess:
    """`python -m services.worker` as a process of its own, configured by environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = int(env.get("GRPC_PORT") or free_port())
        self.env = {**os.environ, **env, "GRPC_PORT": str(self.port), "GRPC_HOST": "127.0.0.1"}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.worker"],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.wait_serving(timeout)
        return self

    def wait_serving(self, timeout: float) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"the worker exited: {self.stderr()}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("the worker did not become ready")
                time.sleep(0.05)

    def stderr(self) -> str:
        if self.process is None or self.process.stderr is None:
            return ""
        if self.process.poll() is None:
            return ""
        return self.process.stderr.read().decode(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def worker_env(
    s3_env: dict[str, str], nats_url: str, scratch_root: str, **extra: str
) -> dict[str, str]:
    return {
        **s3_env,
        "NATS_URL": nats_url,
        "SCRATCH_ROOT": scratch_root,
        "LOG_FORMAT": "text",
        **extra,
    }


def probe_result(log: str) -> dict[str, Any]:
    """The JSON line a probing script printed as `CADPIPE_PROBE {...}`."""
    match = re.search(r"^CADPIPE_PROBE (.*)$", log, flags=re.MULTILINE)
    assert match, f"the script's findings are not in its log:\n{log}"
    return dict(json.loads(match.group(1)))
