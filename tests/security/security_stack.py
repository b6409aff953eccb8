"""The services behind an authenticating gateway, as production runs them: the script service
and the watcher on free gRPC ports believing the gateway's identity metadata only with the
service token, the gateway accepting API tokens (MongoDB) and HS256 JWTs, on the session's moto
and a nats-server of the module's own. One stack per test module (starting one takes about a
second); each test uses projects of its own names.

Identities: alice and bob (users), root (admin), each with an API token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from support.polling import wait_until

from cadpipe import layout
from cadpipe.adapters import mongo, s3
from cadpipe.devstack import MotoS3, NatsServer
from cadpipe.settings import MongoSettings, S3Settings
from services.gateway import bootstrap as gateway
from services.gateway.settings import Settings as GatewaySettings
from services.gateway.tokens import MongoTokens
from services.generator import bootstrap as generator
from services.generator.settings import Settings as GeneratorSettings
from services.scripts import bootstrap as scripts
from services.scripts.settings import Settings as ScriptsSettings
from services.watcher import bootstrap as watcher
from services.watcher.settings import Settings as WatcherSettings

JWT_SECRET = "jwt-secret-" + "x" * 40
"""Long enough for HS256 (PyJWT warns below 32 bytes)."""

SCRIPT = "import FreeCAD\nbox = 1\n"


@dataclass
class Secured:
    url: str
    s3_settings: dict[str, Any]
    bucket: s3.Bucket
    db: Any
    mongodb_uri: str
    service_token: str
    scripts_port: int
    watcher_port: int
    nats_url: str
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def client(self, who: str | None = None) -> httpx.AsyncClient:
        headers = self.auth(who) if who else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=20)

    def jwt(self, sub: str, *, expires_in: float = 300, **claims: Any) -> str:
        now = int(time.time())
        payload = {"sub": sub, "iat": now, "exp": now + int(expires_in), **claims}
        return jwt.encode(payload, JWT_SECRET, algorithm="HS256")

    async def settled_snapshot(self) -> dict[str, Any]:
        """The snapshot once earlier uploads have settled: their events published and their
        jobs recorded by the watcher (which happens in the background, after the upload)."""

        def settled() -> bool:
            pending = self.db["outbox"].count_documents({"sent_at": None})
            versions = self.db["versions"].count_documents({})
            return pending == 0 and self.db["jobs"].count_documents({}) >= versions

        async def check() -> bool:
            return await asyncio.to_thread(settled)

        await wait_until(check)
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """Every object (key, etag) and every document of every collection, but for the fields
        background work changes on its own (VOLATILE): a request that changes nothing leaves
        this equal."""
        objects = {o.key: o.etag for o in self.bucket.list("")}
        collections = {
            name: {
                repr(doc["_id"]): {
                    k: v for k, v in doc.items() if k not in VOLATILE.get(name, ())
                }
                for doc in self.db[name].find({})
            }
            for name in sorted(self.db.list_collection_names())
        }
        return {"objects": objects, "collections": collections}


VOLATILE = {
    # the publisher marks entries sent; the watcher renews its leases and decides versions
    "outbox": {"sent_at", "attempts", "last_error"},
    "jobs": {
        "lease_until", "owner", "state", "outputs", "log_key", "error", "exit_reason",
        "finished_at", "detected_at", "duration_seconds", "event_published",
    },
}


def assert_unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Equal snapshots, or a message naming what changed."""
    changes = [
        f"object {key}: {before['objects'].get(key)} -> {after['objects'].get(key)}"
        for key in sorted(set(before["objects"]) | set(after["objects"]))
        if before["objects"].get(key) != after["objects"].get(key)
    ]
    names = set(before["collections"]) | set(after["collections"])
    for name in sorted(names):
        old, new = before["collections"].get(name, {}), after["collections"].get(name, {})
        for doc_id in sorted(set(old) | set(new)):
            if old.get(doc_id) != new.get(doc_id):
                changes.append(f"{name} {doc_id}: {old.get(doc_id)} -> {new.get(doc_id)}")
    assert not changes, "\n".join(changes)


def s3_env(moto: MotoS3, bucket_name: str) -> dict[str, Any]:
    return moto.s3_fields(bucket_name)


@asynccontextmanager
async def start_secured(moto: MotoS3, **gateway_overrides: Any) -> AsyncIterator[Secured]:
    unique = uuid.uuid4().hex[:10]
    s3_values = s3_env(moto, f"cadpipe-sec-{unique}")
    bucket = s3.Bucket(s3.make_client(S3Settings(**s3_values)), s3_values["s3_bucket"])
    bucket.create_if_missing()
    mongodb_uri = f"mongomock://security-{unique}"
    database = f"cadpipe_sec_{unique}"
    service_token = secrets.token_urlsafe(32)
    async with AsyncExitStack() as stack:
        nats = stack.enter_context(NatsServer())
        common = {
            **s3_values,
            "mongodb_uri": mongodb_uri,
            "mongodb_database": database,
            "nats_url": nats.url,
            "grpc_host": "127.0.0.1",
            "grpc_port": 0,
            "service_token": service_token,
            "shutdown_grace_seconds": 0.5,
        }
        scripts_svc = await stack.enter_async_context(scripts.start(ScriptsSettings(**common)))
        watcher_svc = await stack.enter_async_context(
            watcher.start(
                WatcherSettings(**common, scripts_addr=f"127.0.0.1:{scripts_svc.port}")
            )
        )
        generator_svc = await stack.enter_async_context(
            generator.start(
                GeneratorSettings(
                    **common,
                    scripts_addr=f"127.0.0.1:{scripts_svc.port}",
                    watcher_addr=f"127.0.0.1:{watcher_svc.port}",
                )
            )
        )
        settings = GatewaySettings(
            **{
                "http_host": "127.0.0.1",
                "http_port": 0,
                "scripts_addr": f"127.0.0.1:{scripts_svc.port}",
                "watcher_addr": f"127.0.0.1:{watcher_svc.port}",
                "generator_addr": f"127.0.0.1:{generator_svc.port}",
                "mongodb_uri": mongodb_uri,
                "mongodb_database": database,
                "jwt_secret": JWT_SECRET,
                "service_token": service_token,
                "grpc_deadline_seconds": 5.0,
                "shutdown_grace_seconds": 0.5,
                "upload_burst": 1000,
                "generation_burst": 1000,
                **gateway_overrides,
            }
        )
        running = await stack.enter_async_context(gateway.start(settings))
        client, db = mongo.connect(
            MongoSettings.model_validate(
                {"mongodb_uri": mongodb_uri, "mongodb_database": database}
            )
        )
        stack.callback(client.close)
        secured = Secured(
            url=running.url,
            s3_settings=s3_values,
            bucket=bucket,
            db=db,
            mongodb_uri=mongodb_uri,
            service_token=service_token,
            scripts_port=scripts_svc.port,
            watcher_port=watcher_svc.port,
            nats_url=nats.url,
        )
        store = MongoTokens(db)
        for who, admin in (("alice", False), ("bob", False), ("root", True)):
            secured.tokens[who], _ = store.create(who, admin=admin)
        yield secured


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(moto_server: MotoS3) -> AsyncIterator[Secured]:
    async with start_secured(moto_server) as stack:
        yield stack


@pytest.fixture
def project() -> str:
    return f"sec-{uuid.uuid4().hex[:10]}"


async def upload(client: httpx.AsyncClient, project: str, script: str = SCRIPT) -> httpx.Response:
    return await client.post(f"/api/projects/{project}/upload-script", json={"script": script})


def finish_version(bucket: s3.Bucket, project: str, version: int = 1) -> str:
    """What a worker of the older contract leaves: an STL, an info log (the one routes.py
    names) and an empty marker; and the geometry report our worker adds. Returns the STL's
    key."""
    key = layout.output_key(project, version, "part.stl")
    body = b"solid part\nendsolid part\n"
    bucket.put(key, body, content_type="model/stl")
    report = {"freecad_version": "1.0.0", "files": [{"name": "part.stl", "kind": "mesh"}]}
    bucket.put(
        layout.output_key(project, version, layout.REPORT_NAME),
        json.dumps(report).encode(),
        content_type="application/json",
    )
    written = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    log = layout.log_key(project, version, "info", written)
    bucket.put(log, b"done\n", content_type="text/plain")
    bucket.put(layout.marker_key(project, version), b"", content_type="text/plain")
    return key
