"""NATS goes away under a running script service: uploads go on, and each event reaches the
stream once NATS is back, exactly once."""

from __future__ import annotations

import asyncio
import pathlib
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scripts_harness import fetch_uploaded, scripts_settings
from support.polling import wait_until

from cadpipe import messaging
from cadpipe.adapters import s3
from cadpipe.devstack import NatsServer, free_port
from cadpipe.settings import MongoSettings, NatsSettings, S3Settings
from cadpipe.v1 import scripts_pb2, scripts_pb2_grpc
from services.scripts.bootstrap import EVENTS_HEALTH, start


async def test_an_upload_while_nats_is_down_is_announced_once_it_is_back(
    bucket: s3.Bucket,
    s3_settings: S3Settings,
    mongo_settings: MongoSettings,
    mongo_db: Any,
    unique: str,
    tmp_path: pathlib.Path,
) -> None:
    project = f"outage-{unique}"
    outbox = mongo_db["outbox"]

    def entry(version: int) -> dict[str, Any]:
        return outbox.find_one({"_id": messaging.uploaded_msg_id(project, version)}) or {}

    nats = NatsServer(store_dir=str(tmp_path / "nats")).start()  # this test's own, to stop
    try:
        settings = scripts_settings(
            s3_settings,
            mongo_settings,
            nats.url,
            outbox_max_backoff_seconds=0.5,
            publish_timeout_seconds=0.5,
        )
        async with (
            start(settings) as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
        ):
            stub = scripts_pb2_grpc.ScriptServiceStub(channel)
            await asyncio.wait_for(running.publisher.connected.wait(), 10)
            await stub.UploadScript(
                scripts_pb2.UploadScriptRequest(project=project, script="a = 1\n"), timeout=10
            )
            await wait_until(
                lambda: entry(1).get("sent_at") is not None, within=10, what="version 1's event"
            )

            await asyncio.to_thread(nats.stop)
            started = time.monotonic()
            reply = await stub.UploadScript(
                scripts_pb2.UploadScriptRequest(project=project, script="a = 2\n"), timeout=10
            )
            assert reply.script.version == 2
            assert time.monotonic() - started < 2  # the upload does not wait for NATS
            await wait_until(
                lambda: entry(2).get("attempts", 0) >= 1, within=10, what="a failed publish"
            )
            assert entry(2)["sent_at"] is None

            await asyncio.to_thread(nats.start)  # same port, same store: the stream is back
            await wait_until(
                lambda: entry(2).get("sent_at") is not None, within=20, what="version 2's event"
            )

        nc = await messaging.connect(NatsSettings(nats_url=nats.url), name="test")
        try:
            messages = await fetch_uploaded(nc.jetstream(), project, at_least=2)
        finally:
            await nc.close()
        assert [m.headers["Nats-Msg-Id"] for m in messages] == [
            messaging.uploaded_msg_id(project, 1),
            messaging.uploaded_msg_id(project, 2),
        ]
    finally:
        nats.stop()


async def test_the_service_starts_serves_and_stops_without_nats(
    bucket: s3.Bucket,
    s3_settings: S3Settings,
    mongo_settings: MongoSettings,
    mongo_db: Any,
    unique: str,
) -> None:
    nowhere = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    settings = scripts_settings(s3_settings, mongo_settings, nowhere)
    project = f"nonats-{unique}"
    async with (
        start(settings) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        ready = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert ready.status == health_pb2.HealthCheckResponse.SERVING  # uploads work: ready
        events = await health.Check(health_pb2.HealthCheckRequest(service=EVENTS_HEALTH), timeout=5)
        assert events.status == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = scripts_pb2_grpc.ScriptServiceStub(channel)
        reply = await stub.UploadScript(
            scripts_pb2.UploadScriptRequest(project=project, script="a = 1\n"), timeout=10
        )
        assert reply.script.version == 1
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 3
    pending = mongo_db["outbox"].find_one({"_id": messaging.uploaded_msg_id(project, 1)})
    assert pending["sent_at"] is None  # kept for when NATS is back
