"""What every service shares about starting and stopping: logging configured through its
settings (a bad LOG_LEVEL stops it with EX_CONFIG and a message, not a traceback), the
gateway's tokens command loading settings like main, and one NATS close policy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.processes import REPO, child_env

from cadpipe import messaging
from cadpipe.devstack import NatsServer
from cadpipe.settings import EX_CONFIG, NatsSettings


def _run(module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("module", "env"),
    [
        ("services.scripts", {"LOG_LEVEL": "LOUD"}),
        ("services.watcher", {"LOG_FORMAT": "xml"}),
        ("services.gateway", {"LOG_LEVEL": "chatty"}),
    ],
)
def test_a_bad_log_setting_stops_the_service_with_ex_config(
    module: str, env: dict[str, str]
) -> None:
    result = _run(module, **env)
    assert result.returncode == EX_CONFIG, result.stderr
    assert "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    problems = [p for line in lines for p in line.get("problems", [])]
    name = next(iter(env))
    assert any(p.startswith(f"{name}:") for p in problems), result.stderr


def test_the_log_settings_are_read_in_any_case() -> None:
    result = _run("services.gateway", "tokens", "list", LOG_FORMAT="TEXT", LOG_LEVEL="debug")
    assert result.returncode == EX_CONFIG  # MONGODB_URI missing: said in text, not JSON
    assert "MONGODB_URI: required, but not set" in result.stderr
    assert "Traceback" not in result.stderr
    assert not result.stderr.lstrip().startswith("{")


async def test_closing_nats_never_raises_whatever_state_it_is_in() -> None:
    with NatsServer() as server:
        nc = await messaging.connect(NatsSettings(nats_url=server.url), name="test")
        received: list[bytes] = []

        async def got(msg: object) -> None:
            received.append(getattr(msg, "data", b""))

        await nc.subscribe("cadpipe.test", cb=got)
        await nc.publish("cadpipe.test", b"one")
        await messaging.close(nc)  # connected: drained, the message delivered first
        assert received == [b"one"] and nc.is_closed
        await messaging.close(nc)  # closed already: nothing to do

        gone = await messaging.connect(
            NatsSettings(nats_url=server.url), name="test", allow_reconnect=False
        )
    # the server is gone: the drain cannot happen, the close must
    await messaging.close(gone)
    assert gone.is_closed
