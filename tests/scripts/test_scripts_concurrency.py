"""64 concurrent uploads to one project through two script-service processes that share the S3
endpoint: versions are exactly 1..64, each holds the script of the caller told that version.

Each process has its own mongomock, so each one's version guesses go stale as the other writes:
the conditional put and the probe repair carry the whole correctness."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scripts_harness import fetch_uploaded
from support.processes import child_env

from cadpipe import layout, messaging
from cadpipe.adapters import s3
from cadpipe.devstack import MotoS3, NatsServer, free_port
from cadpipe.settings import MongoSettings
from cadpipe.v1 import scripts_pb2, scripts_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parents[2]
UPLOADS = 64


@contextlib.contextmanager
def script_service(
    env: dict[str, str], log: pathlib.Path
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.scripts"],
            cwd=ROOT,
            env=child_env({**env, "GRPC_HOST": "127.0.0.1", "GRPC_PORT": str(port)}),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            yield port, process
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def read_log(log: pathlib.Path) -> str:
    return log.read_text(errors="replace")[-5000:]


async def wait_serving(port: int, process: subprocess.Popen[bytes], log: pathlib.Path) -> None:
    deadline = time.monotonic() + 60
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            assert process.poll() is None, f"script service exited:\n{read_log(log)}"
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            assert time.monotonic() < deadline, f"script service not serving:\n{read_log(log)}"
            await asyncio.sleep(0.1)


async def test_two_processes_64_concurrent_uploads_give_versions_1_to_64(
    bucket: s3.Bucket,
    moto_server: MotoS3,
    nats_server: NatsServer,
    mongo_settings: MongoSettings,
    js: Any,
    unique: str,
    tmp_path: pathlib.Path,
) -> None:
    project = f"race-{unique}"
    real_mongodb = os.environ.get("MONGODB_URI")
    envs = [
        {
            **moto_server.env(bucket.name),
            # with a real MongoDB both share it, as replicas would; mongomock is per process
            "MONGODB_URI": real_mongodb or f"mongomock://{name}",
            "MONGODB_DATABASE": mongo_settings.mongodb_database,
            "NATS_URL": nats_server.url,
            "LOG_LEVEL": "WARNING",
        }
        for name in ("a", "b")
    ]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with (
        script_service(envs[0], logs[0]) as (port_a, proc_a),
        script_service(envs[1], logs[1]) as (port_b, proc_b),
    ):
        await asyncio.gather(
            wait_serving(port_a, proc_a, logs[0]), wait_serving(port_b, proc_b, logs[1])
        )
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port_a}") as channel_a,
            grpc.aio.insecure_channel(f"127.0.0.1:{port_b}") as channel_b,
        ):
            stubs = [
                scripts_pb2_grpc.ScriptServiceStub(channel_a),
                scripts_pb2_grpc.ScriptServiceStub(channel_b),
            ]
            for stub in stubs:  # connections up, so that both processes race from the start
                await stub.ListScripts(scripts_pb2.ListScriptsRequest(project=project), timeout=10)
            scripts = [f"# caller {i}\nx = {i}\n" for i in range(UPLOADS)]
            replies = await asyncio.gather(
                *(
                    stubs[i % 2].UploadScript(
                        scripts_pb2.UploadScriptRequest(project=project, script=script), timeout=60
                    )
                    for i, script in enumerate(scripts)
                )
            )
            told = {reply.script.version: scripts[i] for i, reply in enumerate(replies)}
            assert sorted(told) == list(range(1, UPLOADS + 1)), sorted(told)

            keys = [o.key for o in bucket.list(layout.project_input_prefix(project))]
            assert sorted(keys) == sorted(layout.script_key(project, v) for v in told)
            for version, script in told.items():
                stored = bucket.get(layout.script_key(project, version))
                assert stored is not None and stored.body == script.encode(), version

            # each process's index only saw its own half; listing finds the rest in S3
            for stub in stubs:
                page = await stub.ListScripts(
                    scripts_pb2.ListScriptsRequest(project=project, page_size=1000), timeout=30
                )
                assert [s.version for s in page.scripts] == list(range(1, UPLOADS + 1))

            messages = await fetch_uploaded(js, project, at_least=UPLOADS, within=20)
            ids = [m.headers["Nats-Msg-Id"] for m in messages]
            assert sorted(ids) == sorted(messaging.uploaded_msg_id(project, v) for v in told)
