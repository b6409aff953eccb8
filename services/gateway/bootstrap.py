"""The gateway's composition root: route table from the descriptors, gRPC channels from the
settings, the ASGI app, and uvicorn serving it on a socket bound here (so http_port=0 works and
the bound port is known before the first request).

    async with start(Settings()) as running:
        ... running.port ...

On exit: event streams end and /readyz turns 503, uvicorn stops accepting and gives in-flight
requests shutdown_grace_seconds, then the channels close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from cadpipe.adapters import mongo
from cadpipe.callers import SERVICE_TOKEN_KEY, channel_credentials
from cadpipe.metrics import ServiceMetrics
from services.gateway.app import Gateway, create_app
from services.gateway.auth import ApiTokens, Authenticator, JwtVerifier
from services.gateway.backends import Backends, channel_options
from services.gateway.guard import ACCESS_TOKEN_PARAM, Guard
from services.gateway.metrics import HttpMetrics, HttpMetricsMiddleware
from services.gateway.ratelimit import MethodLimit, RateLimiter
from services.gateway.routes import default_modules, derive_routes_from_modules
from services.gateway.settings import GENERATE_METHOD, Settings
from services.gateway.tokens import MongoTokens
from services.gateway.transcode import check_bindings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Running:
    port: int
    app: Starlette
    gateway: Gateway

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process's main() owns SIGTERM/SIGINT
    (cadpipe.grpc_server.stop_event_on_signals) and stops every service in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def start(settings: Settings) -> AsyncIterator[Running]:
    table = derive_routes_from_modules(default_modules())
    check_bindings(list(table))
    addresses = settings.backend_addresses()
    for service in table.services():
        if service not in addresses:
            logger.warning("no backend configured for %s: its routes answer 503", service)
    async with AsyncExitStack() as stack:
        observed = ServiceMetrics("gateway")
        stack.enter_context(observed.serving(settings.http_host, settings.metrics_port))
        http_metrics = Middleware(
            HttpMetricsMiddleware, metrics=HttpMetrics(observed.registry), table=table
        )
        backends = Backends(
            addresses,
            options=_channel_options(settings),
            credentials=_channel_credentials(settings),
            call_metadata=_service_metadata(settings),
        )
        stack.push_async_callback(backends.close)
        gateway = Gateway(
            table=table,
            backends=backends,
            deadline_seconds=settings.grpc_deadline_seconds,
            max_body_bytes=settings.max_body_bytes,
            keepalive_seconds=settings.sse_keepalive_seconds,
            readiness_timeout_seconds=settings.readiness_timeout_seconds,
            ignored_query_params=frozenset({ACCESS_TOKEN_PARAM}),
            bearer_auth=settings.auth_mode == "bearer",
            public_paths=frozenset(settings.public_path_list()),
        )
        guard = Middleware(
            Guard,
            table=table,
            authenticator=await _authenticator(settings, stack),
            limiter=_limiter(settings),
            method_limiters=_method_limiters(settings),
            public_paths=settings.public_path_list(),
            admin_prefixes=settings.admin_prefix_list(),
        )
        # CORS outside the guard: preflights carry no token, and refusals need CORS headers
        app = create_app(gateway, middleware=[http_metrics, *_cors(settings.cors_origins()), guard])
        # uvicorn's access lines carry the query string, where an event stream's access_token
        # travels: they stay off even when a handler is attached to their logger (the
        # RequestIdMiddleware logs every request, without the query)
        logging.getLogger("uvicorn.access").disabled = True
        sock = stack.enter_context(_bind(settings.http_host, settings.http_port))
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,  # RequestIdMiddleware logs each request with its id
            timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
        )
        server = _Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="gateway-http")
        await _started(server, serving)
        port = int(sock.getsockname()[1])
        logger.info(
            "gateway listening on %s:%d (%d routes; backends %s)",
            settings.http_host,
            port,
            len(table),
            addresses,
        )
        try:
            yield Running(port=port, app=app, gateway=gateway)
        finally:
            gateway.closing.set()
            server.should_exit = True
            await serving
            logger.info("gateway stopped")


async def _authenticator(settings: Settings, stack: AsyncExitStack) -> Authenticator | None:
    if settings.auth_mode == "none":
        logger.warning("AUTH_MODE=none: every request is served without authentication")
        return None
    api_tokens = None
    if settings.api_tokens:
        assert settings.mongodb_uri is not None  # Settings checked it
        client = mongo.make_client(settings.mongodb_uri.get_secret_value())
        stack.callback(client.close)
        store = MongoTokens(client[settings.mongodb_database])
        # fails the start, with the driver's message, when MongoDB does not answer
        await mongo.in_thread(store.ensure_indexes)
        api_tokens = ApiTokens(store, cache_seconds=settings.api_token_cache_seconds)
    verifier = None
    if settings.jwt_configured:
        key = settings.jwt_secret or settings.jwt_public_key
        assert key is not None
        verifier = JwtVerifier(
            key=key.get_secret_value(),
            algorithms=settings.jwt_algorithm_list(),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            admin_claim=settings.jwt_admin_claim,
            admin_value=settings.jwt_admin_value,
            leeway_seconds=settings.jwt_leeway_seconds,
        )
    logger.info(
        "bearer authentication: API tokens %s, JWT %s",
        "on" if api_tokens else "off",
        ",".join(settings.jwt_algorithm_list()) if verifier else "off",
    )
    return Authenticator(api_tokens, verifier)


def _limiter(settings: Settings) -> RateLimiter | None:
    if settings.upload_rate_per_second <= 0:
        return None
    return RateLimiter(settings.upload_rate_per_second, settings.upload_burst)


def _method_limiters(settings: Settings) -> dict[str, MethodLimit]:
    """Limits of their own, per token, on writes that cost more than an upload."""
    if settings.generation_rate_per_minute <= 0:
        return {}
    return {
        GENERATE_METHOD: MethodLimit(
            RateLimiter(settings.generation_rate_per_minute / 60, settings.generation_burst),
            what="generations",
        )
    }


def _channel_options(settings: Settings) -> list[tuple[str, Any]]:
    options = channel_options(settings.grpc_max_message_bytes)
    if settings.grpc_tls_server_name:
        options.append(("grpc.ssl_target_name_override", settings.grpc_tls_server_name))
    return options


def _channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    if not settings.grpc_tls_ca_file:
        return None
    return channel_credentials(
        settings.grpc_tls_ca_file, settings.grpc_tls_cert_file, settings.grpc_tls_key_file
    )


def _service_metadata(settings: Settings) -> list[tuple[str, str]]:
    if settings.service_token is None:
        return []
    return [(SERVICE_TOKEN_KEY, settings.service_token.get_secret_value())]


def _cors(origins: list[str]) -> list[Middleware]:
    """Browsers on another origin (the web frontend) may call the API and read X-Request-Id."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["*"],
            expose_headers=["X-Request-Id"],
            max_age=600,
        )
    ]


@contextlib.contextmanager
def _bind(host: str, port: int) -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted connections only
    # when the listening socket names TCP; without it every keep-alive response waits ~40 ms
    # for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.set_inheritable(True)
        yield sock
    finally:
        sock.close()


async def _started(
    server: uvicorn.Server, serving: asyncio.Task[None], within: float = 10.0
) -> None:
    """Returns once uvicorn accepts connections; raises what stopped it otherwise."""
    deadline = asyncio.get_running_loop().time() + within
    while not server.started:
        if serving.done():
            serving.result()
            raise RuntimeError("the HTTP server stopped while starting")
        if asyncio.get_running_loop().time() > deadline:
            server.should_exit = True
            raise TimeoutError(f"the HTTP server did not start within {within}s")
        await asyncio.sleep(0.01)
