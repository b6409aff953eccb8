"""The whole pipeline in this process (services/allinone/stack.py) with a generator whose script
writer the test chooses, on the session's moto and a nats-server of the test's own. Helpers to
drive it through REST as a client would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from cadpipe.adapters import mongo
from cadpipe.settings import MongoSettings, S3Settings
from services.allinone import stack
from services.gateway.tokens import MongoTokens
from services.generator.ports import ScriptWriter
from services.generator.settings import Settings as GeneratorSettings

FAST_GENERATOR = {
    "completion_poll_seconds": 0.5,
    "resume_interval_seconds": 0.2,
    "shutdown_grace_seconds": 1.0,
}
"""Quick to notice a missed completion event and a lapsed generation (a test's restart)."""

TERMINAL = ("succeeded", "failed")


@dataclass
class Running:
    stack: stack.Stack
    backends: stack.Backends
    mongo_settings: MongoSettings

    @property
    def url(self) -> str:
        return self.stack.api_url

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token or self.stack.user_token}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=20)

    def generator_settings(self, port: int, **overrides: Any) -> GeneratorSettings:
        """A generator of its own on port, beside this stack (started by the test itself, to
        be stopped and started again or given another provider)."""
        return GeneratorSettings(
            mongodb_uri=self.mongo_settings.mongodb_uri,
            mongodb_database=self.mongo_settings.mongodb_database,
            nats_url=self.backends.nats_url,
            grpc_host="127.0.0.1",
            grpc_port=port,
            scripts_addr=f"127.0.0.1:{self.stack.scripts_port}",
            watcher_addr=f"127.0.0.1:{self.stack.watcher_port}",
            service_token=self.stack.service_token,
            shutdown_grace_seconds=0,
            **overrides,
        )

    def token_for(self, identity: str) -> str:
        client, db = mongo.connect(self.mongo_settings)
        try:
            token, _ = MongoTokens(db).create(identity)
            return token
        finally:
            client.close()


def backends_for(
    s3_settings: S3Settings, mongo_settings: MongoSettings, nats_url: str
) -> stack.Backends:
    return stack.Backends(
        s3=s3_settings.model_dump(),
        nats_url=nats_url,
        mongodb_uri=mongo_settings.mongodb_uri.get_secret_value(),
        mongodb_database=mongo_settings.mongodb_database,
    )


@asynccontextmanager
async def start(
    s3_settings: S3Settings,
    mongo_settings: MongoSettings,
    nats_url: str,
    writer: ScriptWriter | None,
    *,
    with_generator: bool = True,
    generator_port: int = 0,
    gateway: dict[str, Any] | None = None,
    generator: dict[str, Any] | None = None,
) -> AsyncIterator[Running]:
    backends = backends_for(s3_settings, mongo_settings, nats_url)
    overrides = stack.Overrides(
        gateway={
            "generation_burst": 100,
            "upload_burst": 1000,
            "shutdown_grace_seconds": 1.0,
            **(gateway or {}),
        },
        generator={**FAST_GENERATOR, **(generator or {})},
    )
    async with stack.start(
        backends,
        stack.Ports(generator=generator_port),
        overrides,
        writer=writer,
        with_generator=with_generator,
    ) as running:
        yield Running(running, backends, mongo_settings)


async def generate(client: httpx.AsyncClient, project: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/api/projects/{project}/generate", json=body)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def finished(
    client: httpx.AsyncClient, project: str, generation_id: str, *, within: float = 60
) -> dict[str, Any]:
    """Polls the generation until it succeeded or failed (through 503s: a generator that has
    just started again is reconnected to after a moment, as any client would retry)."""
    deadline = time.monotonic() + within
    while True:
        response = await client.get(f"/api/projects/{project}/generations/{generation_id}")
        if response.status_code == 503 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            continue
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        if found["state"] in TERMINAL:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"generation still {found['state']}: {found}")
        await asyncio.sleep(0.1)
