"""The whole pipeline in this process (services/allinone/stack.py) on the session's moto and
nats-server, with its own bucket and MongoDB."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cadpipe.settings import MongoSettings, S3Settings
from services.allinone import stack


@pytest.fixture
async def pipeline(
    bucket: object, s3_settings: S3Settings, mongo_settings: MongoSettings, nats_server: object
) -> AsyncIterator[stack.Stack]:
    backends = stack.Backends(
        s3=s3_settings.model_dump(),  # secrets stay SecretStr: the services' settings take them
        nats_url=nats_server.url,  # type: ignore[attr-defined]
        mongodb_uri=mongo_settings.mongodb_uri.get_secret_value(),
        mongodb_database=mongo_settings.mongodb_database,
    )
    async with stack.start(backends) as running:
        yield running
