"""The worker's intake under a flood and an outage: owners take turns, and an S3 outage spends
no delivery. Real nats-server, moto's S3 server over HTTP, the real worker with FreeCAD."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import Any

import nats.errors
import pytest
from support.polling import wait_until
from worker_harness import (
    SLOW_SCRIPT,
    STL_SCRIPT,
    announce,
    keys,
    settings_for,
    submit,
    upload,
    wait_marker,
)

from cadpipe import layout, messaging, started
from cadpipe.adapters import s3
from cadpipe.devstack import MotoS3, NatsServer
from cadpipe.settings import NatsSettings, S3Settings
from services.worker.bootstrap import start
from services.worker.intake import Intake, IntakeConfig

pytestmark = pytest.mark.freecad


async def test_another_owners_script_overtakes_a_flood(
    bucket: s3.Bucket,
    s3_settings: S3Settings,
    nats_settings: NatsSettings,
    js: Any,
    scratch_root: str,
) -> None:
    """One slot, eight 1.5 s scripts of one owner queued first; the other owner's trivial
    script waits for the job running when it arrives, not for the flood (~12 s)."""
    flood, other = f"flood-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    settings = settings_for(s3_settings, nats_settings, scratch_root, concurrency=1)
    async with start(settings):
        for version in range(1, 9):
            body = SLOW_SCRIPT.format(seconds=1.5).encode()
            await submit(js, bucket, flood, version, body, owner="alice")
        await wait_marker(bucket, flood, 1, within=30)  # the flood is under way
        uploaded = time.monotonic()
        await submit(js, bucket, other, 1, STL_SCRIPT.encode(), owner="bob")
        marker = await wait_marker(bucket, other, 1, within=30)
        waited = time.monotonic() - uploaded
        flood_done = await asyncio.gather(
            *(wait_marker(bucket, flood, v, within=60) for v in range(2, 9))
        )

    assert marker["status"] == "completed"
    # at most the one flood job running when it arrived (1.5 s) plus its own run
    assert waited < 5.0, f"bob's script waited {waited:.1f} s behind alice's flood"
    assert [m["status"] for m in flood_done] == ["completed"] * 7
    # bob's ran before most of the flood
    finished_before = [m for m in flood_done if m["finished_at"] < marker["finished_at"]]
    assert len(finished_before) <= 1


class EmptyQueue:
    """A pull subscription with nothing to fetch: each fetch times out, as nats-py does in
    either of its ways (its own TimeoutError, or asyncio's, with no message, from deeper in
    fetch)."""

    def __init__(self, intake: Intake, fetches: int) -> None:
        self.intake, self.left, self.fetches = intake, fetches, 0

    async def fetch(self, batch: int, timeout: float) -> list[Any]:  # noqa: ASYNC109 - nats-py's
        self.fetches += 1
        if self.fetches >= self.left:
            self.intake._stopping.set()
        raise nats.errors.TimeoutError if self.fetches % 2 else TimeoutError()

    async def unsubscribe(self) -> None:
        pass


async def test_an_idle_queue_is_not_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    config = IntakeConfig(
        "c", ("s",), ack_wait_seconds=30, max_deliver=3, concurrency=1, fetch_timeout_seconds=0.01
    )
    intake = Intake(None, config, None)  # type: ignore[arg-type]  # neither is reached
    queue = EmptyQueue(intake, fetches=6)
    with caplog.at_level("WARNING", logger="services.worker.intake"):
        await asyncio.wait_for(intake._fetch_forever(queue), 5)  # type: ignore[arg-type]
    assert queue.fetches == 6
    assert intake._healthy.is_set() and not caplog.records, [r.getMessage() for r in caplog.records]


async def test_an_s3_outage_spends_no_delivery(
    nats_settings: NatsSettings, js: Any, scratch_root: str
) -> None:
    """Ten versions queued, S3 stopped for 15 s: the worker holds them (heartbeating, ack_wait
    3 s), probes S3 with back-off, and runs all ten once it answers, each on its first
    delivery."""
    project = f"outage-{uuid.uuid4().hex[:6]}"
    s3_server = MotoS3().start()
    port = s3_server.port
    name = f"cadpipe-outage-{uuid.uuid4().hex[:8]}"
    s3_settings = S3Settings(**s3_server.s3_fields(name))  # type: ignore[arg-type]
    bucket = s3.Bucket(s3.make_client(s3_settings), name)
    bucket.create_if_missing()
    settings = settings_for(
        s3_settings,
        nats_settings,
        scratch_root,
        concurrency=2,
        ack_wait_seconds=3.0,
        readiness_interval_seconds=0.5,
        dependency_backoff_max_seconds=2.0,
    )
    events = [upload(bucket, project, v, STL_SCRIPT.encode(), owner="carol") for v in range(1, 11)]
    try:
        async with start(settings):
            s3_server.stop()
            stopped = time.monotonic()
            for version, event in enumerate(events, start=1):
                await announce(js, project, version, event)
            await asyncio.sleep(15)
            s3_server = MotoS3(port=port).start()  # moto keeps its data in this process
            markers = await asyncio.gather(
                *(wait_marker(bucket, project, v, within=60) for v in range(1, 11))
            )
            recovered = time.monotonic() - stopped
    finally:
        s3_server.stop()

    assert [m["status"] for m in markers] == ["completed"] * 10
    assert [m["attempts"] for m in markers] == [1] * 10  # no delivery spent on the outage
    assert recovered < 15 + 20


async def test_a_version_the_watcher_expired_is_acked_and_never_run(
    bucket: s3.Bucket,
    s3_settings: S3Settings,
    nats_settings: NatsSettings,
    js: Any,
    scratch_root: str,
) -> None:
    project = f"expired-{uuid.uuid4().hex[:6]}"
    event = upload(bucket, project, 1, STL_SCRIPT.encode(), owner="dave")
    expiry = started.expired(dt.datetime.now(dt.UTC), waited_seconds=1801, limit_seconds=1800)
    bucket.put(layout.started_key(project, 1), expiry.to_json(), content_type=started.CONTENT_TYPE)
    async with start(settings_for(s3_settings, nats_settings, scratch_root)):
        await announce(js, project, 1, event)
        # a later version of the project runs as usual: the expired one was taken and let go
        await submit(js, bucket, project, 2, STL_SCRIPT.encode(), owner="dave")
        await wait_marker(bucket, project, 2, within=30)

        async def all_acked() -> bool:
            info = await js.consumer_info(messaging.SCRIPTS_STREAM, "cadpipe-worker")
            return info.num_ack_pending == 0 and info.num_pending == 0

        await wait_until(all_acked, within=10, what="the expired version's message acked")
    assert not bucket.exists(layout.marker_key(project, 1))
    assert keys(bucket, layout.version_logs_prefix(project, 1)) == []
    assert keys(bucket, layout.output_prefix(project, 1)) == []


async def test_a_nats_outage_spends_no_delivery(
    bucket: s3.Bucket,
    s3_settings: S3Settings,
    nats_server: NatsServer,
    nats_settings: NatsSettings,
    js: Any,
    scratch_root: str,
) -> None:
    """Four 1 s scripts queued, nats-server stopped for 6 s while the first runs: the worker
    stops taking work, finishes what runs, and after NATS is back runs the rest, each on its
    first delivery, with no redelivery on the consumer."""
    project = f"natsout-{uuid.uuid4().hex[:6]}"
    settings = settings_for(
        s3_settings,
        nats_settings,
        scratch_root,
        concurrency=1,
        readiness_interval_seconds=0.5,
        dependency_backoff_max_seconds=1.0,
    )
    async with start(settings):
        for version in range(1, 5):
            body = SLOW_SCRIPT.format(seconds=1).encode()
            await submit(js, bucket, project, version, body, owner="erin")
        await asyncio.sleep(1.0)
        await asyncio.to_thread(nats_server.stop)
        await asyncio.sleep(6)
        await asyncio.to_thread(nats_server.start)
        markers = await asyncio.gather(
            *(wait_marker(bucket, project, v, within=60) for v in range(1, 5))
        )

        async def settled() -> Any:
            info = await js.consumer_info(messaging.SCRIPTS_STREAM, "cadpipe-worker")
            return info if info.num_ack_pending == 0 and info.num_pending == 0 else None

        info = await wait_until(settled, within=20, what="every message acked")
    assert [m["status"] for m in markers] == ["completed"] * 4
    assert [m["attempts"] for m in markers] == [1] * 4
    assert info.num_redelivered == 0


async def test_the_per_owner_cap_keeps_a_slot_for_others(
    bucket: s3.Bucket,
    s3_settings: S3Settings,
    nats_settings: NatsSettings,
    js: Any,
    scratch_root: str,
) -> None:
    """Two slots, at most one job of an owner at a time: the flood runs one by one, and the
    other owner's script runs beside it at once."""
    flood, other = f"capped-{uuid.uuid4().hex[:6]}", f"free-{uuid.uuid4().hex[:6]}"
    settings = settings_for(
        s3_settings, nats_settings, scratch_root, concurrency=2, max_running_per_owner=1
    )
    async with start(settings):
        for version in range(1, 4):
            body = SLOW_SCRIPT.format(seconds=1).encode()
            await submit(js, bucket, flood, version, body, owner="alice")
        await asyncio.sleep(0.5)
        uploaded = time.monotonic()
        await submit(js, bucket, other, 1, STL_SCRIPT.encode(), owner="bob")
        bobs = await wait_marker(bucket, other, 1, within=30)
        waited = time.monotonic() - uploaded
        alices = await asyncio.gather(
            *(wait_marker(bucket, flood, v, within=60) for v in (1, 2, 3))
        )

    assert bobs["status"] == "completed" and waited < 2.5, f"bob waited {waited:.1f} s"
    spans = sorted((m["started_at"], m["finished_at"]) for m in alices)
    assert all(m["status"] == "completed" for m in alices)
    # never two of alice's jobs at once (ISO 8601 UTC strings sort as times)
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1)), spans
