"""Helpers for the watcher's integration tests: settings pointing at the test servers, a worker
simulated by writing its keys straight into S3, and listeners of the completion events."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import grpc
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from support.polling import wait_until

from cadpipe import layout, messaging, started
from cadpipe.adapters.s3 import Bucket
from cadpipe.marker import Marker, MarkerOutput
from cadpipe.settings import MongoSettings, NatsSettings, S3Settings
from cadpipe.v1 import artifacts_pb2_grpc, events_pb2, status_pb2_grpc
from services.watcher.bootstrap import Running
from services.watcher.settings import Settings


@dataclass
class Service:
    running: Running
    status: status_pb2_grpc.StatusServiceStub
    artifacts: artifacts_pb2_grpc.ArtifactServiceStub
    channel: grpc.aio.Channel


ServiceFactory = Callable[..., AbstractAsyncContextManager[Service]]


LOG_TIME = dt.datetime(2026, 11, 24, 10, 15, 0, tzinfo=dt.UTC)


def watcher_settings(
    s3_settings: S3Settings,
    mongo_settings: MongoSettings,
    nats_settings: NatsSettings,
    **overrides: Any,
) -> Settings:
    values: dict[str, Any] = {
        **s3_settings.model_dump(),
        **mongo_settings.model_dump(),
        "nats_url": nats_settings.nats_url,
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "shutdown_grace_seconds": 0.5,
        "readiness_interval_seconds": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


async def publish_upload(
    js: Any, project: str, version: int, *, uploaded_at: dt.datetime | None = None
) -> None:
    """What the script service publishes after storing version N."""
    event = events_pb2.ScriptUploaded(
        project=project, version=version, key=layout.script_key(project, version)
    )
    event.uploaded_at.FromDatetime(uploaded_at or dt.datetime.now(dt.UTC))
    await js.publish(
        messaging.uploaded_subject(project),
        messaging.encode(event),
        headers={"Nats-Msg-Id": messaging.uploaded_msg_id(project, version)},
    )


def put_output(bucket: Bucket, project: str, version: int, name: str, body: bytes) -> MarkerOutput:
    fmt = layout.output_format(name) or "json"
    content_type = layout.OUTPUT_FORMATS.get(fmt, "application/json")
    key = layout.output_key(project, version, name)
    bucket.put(key, body, content_type=content_type)
    return MarkerOutput(
        key=key,
        name=name,
        format=fmt,
        size_bytes=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        content_type=content_type,
    )


def put_log(
    bucket: Bucket,
    project: str,
    version: int,
    level: layout.LogLevel,
    text: str,
    *,
    written_at: dt.datetime = LOG_TIME,
) -> str:
    key = layout.log_key(project, version, level, written_at)
    bucket.put(key, text.encode(), content_type=layout.LOG_CONTENT_TYPE)
    return key


def start_like_our_worker(bucket: Bucket, project: str, version: int) -> bool:
    """The started record, as our worker writes it before running the script (False when one
    was there: an earlier start, or the watcher's queue expiry)."""
    record = started.started(dt.datetime.now(dt.UTC), worker="test/1", attempt=1)
    return bucket.put_if_absent(
        layout.started_key(project, version), record.to_json(), content_type=started.CONTENT_TYPE
    )


def finish_like_our_worker(
    bucket: Bucket,
    project: str,
    version: int,
    files: dict[str, bytes],
    *,
    error: str = "",
) -> Marker:
    """The started record first, outputs, log, then the JSON marker last, as our worker writes
    them."""
    start_like_our_worker(bucket, project, version)
    outputs = tuple(put_output(bucket, project, version, n, b) for n, b in files.items())
    log = put_log(bucket, project, version, "error" if error else "info", error or "all good\n")
    now = dt.datetime.now(dt.UTC).isoformat()
    marker = Marker(
        status="error" if error else "completed",
        outputs=outputs,
        log_key=log,
        started_at=now,
        finished_at=now,
        duration_seconds=0.5,
        exit_reason="exception" if error else "ok",
        error=error,
        project=project,
        version=version,
    )
    bucket.put(
        layout.marker_key(project, version), marker.to_json(), content_type="application/json"
    )
    return marker


def finish_like_older_worker(
    bucket: Bucket, project: str, version: int, files: dict[str, bytes]
) -> list[MarkerOutput]:
    """Outputs, an _info_ log, then an empty marker (the older contract's success)."""
    outputs = [put_output(bucket, project, version, n, b) for n, b in files.items()]
    put_log(bucket, project, version, "info", "done\n")
    bucket.put(layout.marker_key(project, version), b"", content_type="text/plain")
    return outputs


@dataclass
class JobEvents:
    """Every completion event published on cadpipe.jobs.> (a core subscription, so a repeated
    publication shows even when JetStream drops it as a duplicate)."""

    nc: NatsClient
    received: list[events_pb2.JobFinished] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def listen(cls, nats_settings: NatsSettings) -> JobEvents:
        nc = await messaging.connect(nats_settings, name="test-listener")
        events = cls(nc)

        async def on_message(msg: Msg) -> None:
            events.received.append(messaging.decode(msg.data, events_pb2.JobFinished))
            events.arrived.set()

        await nc.subscribe(messaging.JOB_SUBJECTS, cb=on_message)
        await nc.flush()
        return events

    def of(self, project: str) -> list[events_pb2.JobFinished]:
        return [e for e in self.received if e.project == project]

    async def wait_for(
        self, project: str, count: int = 1, *, within: float = 10.0
    ) -> list[events_pb2.JobFinished]:
        await wait_until(
            lambda: len(self.of(project)) >= count,
            within=within,
            what=f"{count} completion events of {project}",
        )
        return self.of(project)

    async def close(self) -> None:
        await self.nc.close()


async def stored_job_events(js: Any, project: str, *, settle: float = 1.0) -> list[Any]:
    """Every completion event the CADPIPE_JOBS stream holds for the project (a fresh ephemeral
    consumer reads them all; an empty fetch for `settle` seconds ends the read)."""
    sub = await js.pull_subscribe(f"cadpipe.jobs.*.{project}", durable=None)
    messages: list[Any] = []
    while True:
        try:
            batch = await sub.fetch(100, timeout=settle)
        except TimeoutError:
            break
        messages.extend(batch)
    await sub.unsubscribe()
    return [messaging.decode(m.data, events_pb2.JobFinished) for m in messages]
