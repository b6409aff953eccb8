"""The script service started for real (services/scripts/bootstrap.py) on a free port, against the
session's moto server, nats-server and a fresh MongoDB database, with a gRPC client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from scripts_harness import Service, scripts_settings

from cadpipe.adapters import s3
from cadpipe.settings import MongoSettings, NatsSettings, S3Settings
from cadpipe.v1 import scripts_pb2_grpc
from services.scripts.bootstrap import start


@pytest.fixture
async def service(
    bucket: s3.Bucket,
    s3_settings: S3Settings,
    mongo_settings: MongoSettings,
    nats_settings: NatsSettings,
) -> AsyncIterator[Service]:
    settings = scripts_settings(s3_settings, mongo_settings, nats_settings.nats_url)
    async with (
        start(settings) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield Service(
            running, scripts_pb2_grpc.ScriptServiceStub(channel), channel, settings, bucket
        )
