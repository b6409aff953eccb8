"""The watcher started for real (services/watcher/bootstrap.py) on a free port against the test's
moto bucket, nats-server and MongoDB database, with gRPC stubs and a completion-event listener."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from watcher_harness import JobEvents, Service, ServiceFactory, watcher_settings

from cadpipe.settings import MongoSettings, NatsSettings, S3Settings
from cadpipe.v1 import artifacts_pb2_grpc, status_pb2_grpc
from services.watcher.bootstrap import start


@pytest.fixture
def make_service(
    bucket: Any,
    s3_settings: S3Settings,
    mongo_settings: MongoSettings,
    nats_settings: NatsSettings,
) -> ServiceFactory:
    """Starts a watcher with the given setting overrides; several may run at once (replicas on
    the same MongoDB database and streams)."""

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[Service]:
        settings = watcher_settings(s3_settings, mongo_settings, nats_settings, **overrides)
        async with (
            start(settings) as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
        ):
            yield Service(
                running,
                status_pb2_grpc.StatusServiceStub(channel),
                artifacts_pb2_grpc.ArtifactServiceStub(channel),
                channel,
            )

    return make


@pytest.fixture
async def service(make_service: ServiceFactory) -> AsyncIterator[Service]:
    async with make_service() as running:
        yield running


@pytest.fixture
async def job_events(nats_settings: NatsSettings) -> AsyncIterator[JobEvents]:
    events = await JobEvents.listen(nats_settings)
    yield events
    await events.close()
