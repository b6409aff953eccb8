"""`python -m services.gateway` as its own process: settings from the environment, JSON logs,
SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import subprocess
import sys

import httpx
from support.processes import child_env

from cadpipe.devstack import free_port

REPO = pathlib.Path(__file__).resolve().parents[2]


async def _wait_healthy(
    url: str, process: asyncio.subprocess.Process, within: float = 20.0
) -> None:
    deadline = asyncio.get_running_loop().time() + within
    async with httpx.AsyncClient() as client:
        while True:
            assert process.returncode is None, "the gateway exited while starting"
            try:
                if (await client.get(url, timeout=1)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert asyncio.get_running_loop().time() < deadline, (
                f"{url} did not answer in {within}s"
            )
            await asyncio.sleep(0.05)


async def test_the_gateway_runs_alone_and_stops_on_sigterm() -> None:
    port = free_port()
    env = child_env(
        {
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(port),
            # nothing listens there: the gateway still starts, and says it is not ready
            "SCRIPTS_ADDR": "127.0.0.1:1",
            "WATCHER_ADDR": "127.0.0.1:1",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "AUTH_MODE": "none",
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.gateway", cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await _wait_healthy(f"http://127.0.0.1:{port}/healthz", process)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            ready = await client.get("/readyz", timeout=5)
            assert ready.status_code == 503
            assert {b["status"] for b in ready.json()["backends"]} == {"UNAVAILABLE"}
            down = await client.get("/api/projects/p/scripts", timeout=5)
            assert down.status_code == 503
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    lines = [
        json.loads(line) for line in (await process.stderr.read()).decode().splitlines() if line
    ]
    messages = [line["message"] for line in lines]
    assert any(m.startswith("gateway listening on 127.0.0.1:") for m in messages), messages
    assert "gateway stopped" in messages
    requests = [line for line in lines if line["logger"] == "services.gateway.app"]
    assert all(line["service"] == "gateway" and line["request_id"] for line in requests)


def test_a_malformed_setting_stops_the_start_with_its_name() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.gateway"],
        cwd=REPO,
        env=child_env({"HTTP_PORT": "eighty", "LOG_FORMAT": "text"}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "HTTP_PORT" in result.stderr
