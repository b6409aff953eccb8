"""The services as the processes Kubernetes runs (`python -m services.<name>`): settings checked
at start with a message naming each wrong variable, and a SIGTERM in the middle of many uploads
losing nothing. (A SIGTERM mid-job is tests/worker/test_worker_delivery.py's: the running job
finishes before the worker exits, or, past the drain timeout, goes back to the stream and
another worker finishes it.)"""

from __future__ import annotations

import asyncio
import hashlib
import json
import pathlib
import signal
import sys
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js.api import ConsumerConfig, DeliverPolicy
from support.processes import child_env

from cadpipe import layout, messaging
from cadpipe.adapters import s3
from cadpipe.devstack import MotoS3, NatsServer, free_port
from cadpipe.settings import EX_CONFIG
from cadpipe.v1 import events_pb2, scripts_pb2, scripts_pb2_grpc

REPO = pathlib.Path(__file__).resolve().parents[2]


async def run_to_exit(service: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"services.{service}",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


CONFIG_CASES: dict[str, tuple[dict[str, str], list[str]]] = {
    # service: (environment, variables the message must name)
    "scripts": (
        {"MONGODB_URI": "mongomock://x", "GRPC_PORT": "fifty", "SERVICE_TOKEN": "tiny-secret"},
        ["S3_BUCKET", "GRPC_PORT", "SERVICE_TOKEN"],
    ),
    "watcher": (
        {"S3_BUCKET": "ok-bucket", "METRICS_PORT": "99999"},
        ["MONGODB_URI", "METRICS_PORT"],
    ),
    "worker": ({"GRPC_PORT": "-1"}, ["S3_BUCKET", "GRPC_PORT"]),
    "gateway": ({"AUTH_MODE": "none", "HTTP_PORT": "eighty"}, ["HTTP_PORT"]),
}


async def test_each_service_refuses_to_start_on_bad_settings_naming_every_variable() -> None:
    results = await asyncio.gather(
        *(run_to_exit(service, child_env(env)) for service, (env, _) in CONFIG_CASES.items())
    )
    for (service, (_, names)), (code, stderr) in zip(CONFIG_CASES.items(), results, strict=True):
        assert code == EX_CONFIG, (service, code, stderr)
        assert "Traceback" not in stderr, stderr
        [line] = [json.loads(x) for x in stderr.splitlines() if x.startswith("{")]
        assert line["level"] == "error" and line["service"] == service
        assert line["message"].startswith(f"{service} cannot start, invalid configuration")
        for name in names:
            assert name in line["message"], (service, name, line["message"])
            assert any(p.startswith(f"{name}: ") for p in line["problems"]), line["problems"]
        assert "tiny-secret" not in stderr  # a secret's value is never repeated
    scripts_problems = json.loads(results[0][1].strip().splitlines()[-1])["problems"]
    assert "S3_BUCKET: required, but not set" in scripts_problems
    assert any("GRPC_PORT: " in p and "'fifty'" in p for p in scripts_problems)


# --- SIGTERM in the middle of uploads -------------------------------------------------------


async def _serving(port: int, process: asyncio.subprocess.Process, within: float = 30) -> None:
    deadline = time.monotonic() + within
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            assert process.returncode is None, "the script service exited while starting"
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            assert time.monotonic() < deadline, "the script service did not become SERVING"
            await asyncio.sleep(0.05)


async def _uploaded_events(js: Any, project: str) -> list[tuple[int, dict[str, str]]]:
    """(version, headers) of every uploaded event of the project in the stream."""
    subject = messaging.uploaded_subject(project)
    subscription = await js.pull_subscribe(
        subject,
        stream=messaging.SCRIPTS_STREAM,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, filter_subject=subject),
    )
    found: list[tuple[int, dict[str, str]]] = []
    try:
        while True:
            try:
                messages = await subscription.fetch(100, timeout=0.5)
            except TimeoutError:
                return found
            for message in messages:
                event = messaging.decode(message.data, events_pb2.ScriptUploaded)
                found.append((event.version, dict(message.headers or {})))
                await message.ack()
    finally:
        await subscription.unsubscribe()


def _stored(bucket: s3.Bucket, project: str) -> dict[int, str]:
    """version -> sha256 of every script of the project in S3."""
    out = {}
    for info in bucket.list(layout.project_input_prefix(project)):
        parsed = layout.parse_script_key(info.key)
        assert parsed is not None, f"{info.key} is not a script key"
        stored = bucket.get(info.key)
        assert stored is not None
        out[parsed[1]] = hashlib.sha256(stored.body).hexdigest()
    return out


async def test_sigterm_mid_upload_finishes_what_was_accepted_and_loses_nothing(
    moto_server: MotoS3, bucket: s3.Bucket, nats_server: NatsServer, js: Any, unique: str
) -> None:
    port = free_port()
    env = child_env(
        {
            **moto_server.env(bucket.name),
            "NATS_URL": nats_server.url,
            "MONGODB_URI": f"mongomock://sigterm-{unique}",
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": str(port),
            "SHUTDOWN_GRACE_SECONDS": "15",
            "READINESS_INTERVAL_SECONDS": "0.2",
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.scripts",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    logs = asyncio.create_task(process.stderr.read())  # drained all along: a full pipe blocks
    projects = [f"term-{unique}-a", f"term-{unique}-b"]
    try:
        await _serving(port, process)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = scripts_pb2_grpc.ScriptServiceStub(channel)
            health: list[str] = []

            async def watch_health() -> None:
                call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
                try:
                    async for reply in call:
                        health.append(
                            health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                        )
                except grpc.aio.AioRpcError:
                    pass  # the server went away

            watching = asyncio.create_task(watch_health())
            first_ok = asyncio.Event()
            signalled = 0.0

            async def upload(project: str, n: int) -> tuple[str, str, Any, float]:
                body = f"# upload {n}\nvalue = {n}\n"
                try:
                    reply = await stub.UploadScript(
                        scripts_pb2.UploadScriptRequest(project=project, script=body), timeout=30
                    )
                except grpc.aio.AioRpcError as error:
                    return project, body, error.code(), time.monotonic()
                first_ok.set()
                return project, body, reply.script, time.monotonic()

            # uploads to one project queue behind each other: many are in flight at the signal
            wave = [asyncio.create_task(upload(p, n)) for n in range(24) for p in projects]
            await asyncio.wait_for(first_ok.wait(), 20)
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            late = [asyncio.create_task(upload(p, 100 + n)) for n in range(4) for p in projects]
            results = await asyncio.gather(*wave, *late)
            assert await asyncio.wait_for(process.wait(), 30) == 0
            await asyncio.wait_for(watching, 5)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stderr = (await logs).decode()

    accepted = [
        (p, body, s) for p, body, s, _ in results if isinstance(s, scripts_pb2.ScriptVersion)
    ]
    refused = [code for _, _, code, _ in results if isinstance(code, grpc.StatusCode)]
    assert set(refused) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, refused
    # uploads in flight when the signal came were finished, not cut off
    finished_after_signal = [
        t for _, _, s, t in results if isinstance(s, scripts_pb2.ScriptVersion) and t > signalled
    ]
    assert finished_after_signal, "no upload was in flight at the SIGTERM; the test proves nothing"
    assert "SERVING" in health and health[-1] == "NOT_SERVING", health

    for project in projects:
        stored = await asyncio.to_thread(_stored, bucket, project)
        events = await _uploaded_events(js, project)
        mine = [(body, s) for p, body, s in accepted if p == project]
        # every accepted upload is in S3 with its bytes, under the version it was told
        for body, script in mine:
            assert stored[script.version] == hashlib.sha256(body.encode()).hexdigest()
            assert script.sha256 == stored[script.version]
        # versions contiguous, and nothing half-done: every stored script has its one event
        assert sorted(stored) == list(range(1, len(stored) + 1))
        assert sorted(v for v, _ in events) == sorted(stored), (project, len(stored), len(events))
        # each event carries the request id of its upload, for the logs of what follows
        assert all(headers.get("X-Request-Id") for _, headers in events)

    messages = [json.loads(x)["message"] for x in stderr.splitlines() if x.startswith("{")]
    assert "script service stopped" in messages, messages[-5:]
    assert "Traceback" not in stderr
