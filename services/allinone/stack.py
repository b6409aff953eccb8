"""Every cadpipe service started in this process against given S3, NATS and MongoDB, each
through its own composition root. Used by `make run` (services/allinone/__main__.py), the
end-to-end tests and the benchmarks."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from cadpipe.adapters import mongo as mongo_adapter
from services.gateway import bootstrap as gateway
from services.gateway.settings import Settings as GatewaySettings
from services.gateway.tokens import MongoTokens
from services.generator import bootstrap as generator
from services.generator.ports import ScriptWriter
from services.generator.settings import Settings as GeneratorSettings
from services.scripts import bootstrap as scripts
from services.scripts.settings import Settings as ScriptsSettings
from services.watcher import bootstrap as watcher
from services.watcher.settings import Settings as WatcherSettings
from services.worker import bootstrap as worker
from services.worker.settings import Settings as WorkerSettings


@dataclass(frozen=True)
class Backends:
    """Where the shared state lives. s3 holds S3Settings fields (s3_bucket, s3_endpoint_url,
    ...)."""

    s3: dict[str, Any]
    nats_url: str
    mongodb_uri: str
    mongodb_database: str = "cadpipe"


@dataclass(frozen=True)
class Ports:
    """0 picks a free port."""

    http: int = 0
    scripts: int = 0
    watcher: int = 0
    worker: int = 0
    metrics: int = 0
    """Prometheus /metrics of the gateway on this port, then scripts, watcher, worker and
    generator on the next four (each service its own registry, as in separate pods); 0: none."""
    generator: int = 0

    def metrics_port(self, offset: int) -> int:
        return self.metrics + offset if self.metrics else 0


@dataclass(frozen=True)
class Overrides:
    """Extra settings per service (tests shorten timeouts this way)."""

    scripts: dict[str, Any] = field(default_factory=dict)
    watcher: dict[str, Any] = field(default_factory=dict)
    worker: dict[str, Any] = field(default_factory=dict)
    gateway: dict[str, Any] = field(default_factory=dict)
    generator: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stack:
    http_port: int
    scripts_port: int
    watcher_port: int
    worker_port: int
    user_token: str = ""
    """An API token of the identity LOCAL_USER (not an admin), made at start; "" when the
    gateway runs with AUTH_MODE=none."""
    admin_token: str = ""
    """An API token of LOCAL_ADMIN, for the admin routes (/api/monitoring/...): MongoDB is in
    this process, so no token command from outside could make one."""
    generator_port: int = 0
    service_token: str = ""
    """What the services believe the gateway's identity metadata with (tests start more
    instances of a service against the same stack with it)."""

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@asynccontextmanager
async def start(
    backends: Backends,
    ports: Ports = Ports(),
    overrides: Overrides = Overrides(),
    *,
    writer: ScriptWriter | None = None,
    with_generator: bool = True,
) -> AsyncIterator[Stack]:
    """writer: the generator's script writer instead of the one its settings name (tests).
    with_generator False: no generator (a test runs its own, at Ports.generator)."""
    # The services believe the caller named by the gateway only with this token (docs/security.md)
    service_token = secrets.token_urlsafe(32)
    common = {
        **backends.s3,
        "nats_url": backends.nats_url,
        "grpc_host": "127.0.0.1",
        "service_token": service_token,
    }
    mongo = {"mongodb_uri": backends.mongodb_uri, "mongodb_database": backends.mongodb_database}
    async with AsyncExitStack() as stack:
        scripts_svc = await stack.enter_async_context(
            scripts.start(
                ScriptsSettings(
                    **{
                        **common,
                        **mongo,
                        "grpc_port": ports.scripts,
                        "metrics_port": ports.metrics_port(1),
                        **overrides.scripts,
                    }
                )
            )
        )
        watcher_svc = await stack.enter_async_context(
            watcher.start(
                WatcherSettings(
                    **{
                        **common,
                        **mongo,
                        "grpc_port": ports.watcher,
                        "metrics_port": ports.metrics_port(2),
                        # the monitoring health report asks the script service's health
                        "scripts_addr": f"127.0.0.1:{scripts_svc.port}",
                        **overrides.watcher,
                    }
                )
            )
        )
        worker_svc = await stack.enter_async_context(
            worker.start(
                WorkerSettings(
                    **{
                        **common,
                        "grpc_port": ports.worker,
                        "metrics_port": ports.metrics_port(3),
                        **overrides.worker,
                    }
                )
            )
        )
        generator_port = ports.generator
        if with_generator:
            generator_svc = await stack.enter_async_context(
                generator.start(
                    GeneratorSettings(
                        **{
                            **common,
                            **mongo,
                            "grpc_port": ports.generator,
                            "metrics_port": ports.metrics_port(4),
                            "scripts_addr": f"127.0.0.1:{scripts_svc.port}",
                            "watcher_addr": f"127.0.0.1:{watcher_svc.port}",
                            **overrides.generator,
                        }
                    ),
                    writer=writer,
                )
            )
            generator_port = generator_svc.port
        gateway_svc = await stack.enter_async_context(
            gateway.start(
                GatewaySettings(
                    **{
                        "http_host": "127.0.0.1",
                        "http_port": ports.http,
                        "scripts_addr": f"127.0.0.1:{scripts_svc.port}",
                        "watcher_addr": f"127.0.0.1:{watcher_svc.port}",
                        "generator_addr": f"127.0.0.1:{generator_port}" if generator_port else "",
                        "metrics_port": ports.metrics_port(0),
                        "service_token": service_token,
                        **mongo,
                        **overrides.gateway,
                    }
                )
            )
        )
        token = admin_token = ""
        if overrides.gateway.get("auth_mode", "bearer") != "none":
            token = await asyncio.to_thread(_user_token, backends)
            admin_token = await asyncio.to_thread(_user_token, backends, LOCAL_ADMIN, admin=True)
        yield Stack(
            gateway_svc.port,
            scripts_svc.port,
            watcher_svc.port,
            worker_svc.port,
            token,
            admin_token,
            generator_port,
            service_token,
        )


LOCAL_USER = "local-user"
LOCAL_ADMIN = "local-admin"


def _user_token(backends: Backends, identity: str = LOCAL_USER, *, admin: bool = False) -> str:
    client = mongo_adapter.make_client(backends.mongodb_uri)
    try:
        token, _ = MongoTokens(client[backends.mongodb_database]).create(identity, admin=admin)
        return token
    finally:
        client.close()
