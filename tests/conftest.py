"""Fixtures that start real servers on 127.0.0.1: moto's S3 server (one per session, a fresh
bucket per test) and nats-server (one per test), with a fresh MongoDB database and names per
test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

# Tests run gRPC servers in threads of this process and also fork it (pexpect, subprocess);
# gRPC's fork handlers, run in a child that only execs, can fail there ("epoll_ctl failed: Bad
# file descriptor") and end the child before its exec. Read when grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest

from cadpipe.adapters import mongo, s3
from cadpipe.devstack import MotoS3, NatsServer
from cadpipe.settings import MongoSettings, NatsSettings, S3Settings


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoS3]:
    with MotoS3() as server:
        yield server


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A fresh nats-server per test (it starts in milliseconds): streams and durable consumers
    never carry one test's messages into another."""
    with NatsServer() as server:
        yield server


@pytest.fixture
def unique() -> str:
    """A short name no other test uses."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def s3_settings(moto_server: MotoS3, unique: str) -> S3Settings:
    return S3Settings(**moto_server.s3_fields(f"cadpipe-test-{unique}"))


@pytest.fixture
def bucket(s3_settings: S3Settings) -> s3.Bucket:
    b = s3.Bucket(s3.make_client(s3_settings), s3_settings.s3_bucket)
    b.create_if_missing()
    return b


@pytest.fixture
def mongo_settings(unique: str) -> MongoSettings:
    """mongomock by default; a real server when MONGODB_URI is set (own database per test)."""
    uri = os.environ.get("MONGODB_URI") or f"mongomock://test-{unique}"
    return MongoSettings(mongodb_uri=uri, mongodb_database=f"cadpipe_test_{unique}")


@pytest.fixture
def mongo_db(mongo_settings: MongoSettings) -> Iterator[Any]:
    client, db = mongo.connect(mongo_settings)
    yield db
    if not mongo_settings.mongodb_uri.get_secret_value().startswith(mongo.MOCK_SCHEME):
        client.drop_database(db.name)
    client.close()


@pytest.fixture
def nats_settings(nats_server: NatsServer) -> NatsSettings:
    return NatsSettings(nats_url=nats_server.url)


@pytest.fixture
async def js(nats_settings: NatsSettings) -> AsyncIterator[Any]:
    """A JetStream context with cadpipe's streams in place."""
    from cadpipe import messaging

    nc = await messaging.connect(nats_settings, name="test")
    jetstream = nc.jetstream()
    await messaging.ensure_streams(jetstream)
    yield jetstream
    await nc.close()
