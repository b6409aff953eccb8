"""A worker told to stop while idle stops at once: its cancelled fetch must not hold the NATS
drain. Real nats-server, moto's S3 server, FreeCAD."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from worker_harness import WorkerProcess, worker_env

from cadpipe.adapters import s3
from cadpipe.devstack import MotoS3
from cadpipe.settings import NatsSettings

pytestmark = pytest.mark.freecad


async def test_sigterm_stops_an_idle_worker_within_two_seconds(
    moto_server: MotoS3, bucket: s3.Bucket, nats_settings: NatsSettings, scratch_root: str
) -> None:
    """A short fetch timeout makes the server answer each pull request often: an answer that
    lands after the fetch was cancelled sits in the subscription's queue, and a drain of a
    subscription still open waits for it until the drain timeout (5 s; nats.py's default is
    30 s)."""
    env = worker_env(
        moto_server.env(bucket.name),
        nats_settings.nats_url,
        scratch_root,
        FETCH_TIMEOUT_SECONDS="0.2",
    )
    worker = WorkerProcess(env).start()
    try:
        await asyncio.sleep(1.0)  # a few fetches come and go
        began = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 15) == 0
        took = time.monotonic() - began
    finally:
        worker.stop()
    assert took < 2.0, f"stopped after {took:.1f} s"
