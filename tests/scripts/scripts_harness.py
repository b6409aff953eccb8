"""Helpers for the script service's integration tests (fixtures in conftest.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc
from nats.js.api import ConsumerConfig, DeliverPolicy

from cadpipe import messaging
from cadpipe.adapters import s3
from cadpipe.settings import MongoSettings, S3Settings
from cadpipe.v1 import scripts_pb2_grpc
from services.scripts.bootstrap import Running
from services.scripts.settings import Settings


def scripts_settings(
    s3_settings: S3Settings, mongo_settings: MongoSettings, nats_url: str, **overrides: Any
) -> Settings:
    return Settings(
        **s3_settings.model_dump(),
        **mongo_settings.model_dump(),
        nats_url=nats_url,
        grpc_host="127.0.0.1",
        grpc_port=0,
        shutdown_grace_seconds=1.0,
        **overrides,
    )


def bucket_listing(bucket: s3.Bucket) -> list[tuple[str, str]]:
    """Every object of the bucket with its ETag: equal listings mean nothing changed."""
    return [(o.key, o.etag) for o in bucket.list("")]


@dataclass
class Service:
    running: Running
    stub: scripts_pb2_grpc.ScriptServiceStub
    channel: grpc.aio.Channel
    settings: Settings
    bucket: s3.Bucket


async def fetch_uploaded(js: Any, project: str, at_least: int, within: float = 5.0) -> list[Any]:
    """Every uploaded event of the project in the stream, waiting until at least `at_least`
    arrived, then a short quiet period so that a duplicate would show up."""
    sub = await js.pull_subscribe(
        messaging.uploaded_subject(project),
        durable=None,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    messages: list[Any] = []
    deadline = time.monotonic() + within
    while len(messages) < at_least and time.monotonic() < deadline:
        try:
            messages += await sub.fetch(at_least - len(messages), timeout=0.5)
        except TimeoutError:
            pass
    try:
        messages += await sub.fetch(10, timeout=0.3)
    except TimeoutError:
        pass
    await sub.unsubscribe()
    return messages
