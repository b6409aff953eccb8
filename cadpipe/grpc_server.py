"""The lifecycle every gRPC service shares: a grpc.aio server with the standard health service
and server reflection, readiness from real dependency checks, and an orderly shutdown.

    async with GrpcServer(settings.grpc_host, settings.grpc_port, readiness=check) as server:
        add_ScriptServiceServicer_to_server(servicer, server.server)  # before start()
        ...

Typical main():  stop = stop_event_on_signals(); build adapters; register servicers;
await server.start(); await stop.wait(); await server.shutdown(grace) (health NOT_SERVING first).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]
"""Raises when a dependency does not answer."""

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

LIVENESS_SERVICE = "liveness"
"""A health entry that is SERVING from start() until shutdown, whatever the dependencies say.
Kubernetes' liveness and startup probes ask for it, so that a MongoDB or NATS outage makes pods
unready (the "" entry) without restarting them all."""


def stop_event_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (call from inside the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve_until_signalled(
    service: AbstractAsyncContextManager[object], *, stopping: str = "stopping"
) -> None:
    """A service's main loop: start it, wait for SIGTERM or SIGINT, log `stopping`, and let
    the service's own context manager shut it down in order."""
    stop = stop_event_on_signals()
    async with service:
        await stop.wait()
        logger.info(stopping)


class HealthServicer(health.aio.HealthServicer):
    """The library's servicer, whose Watch streams also end at shutdown, after a last
    NOT_SERVING: an open Watch (client-side health checking, a proxy, `grpcurl ... Watch`) is an
    RPC in flight, and would hold server.stop() for its whole grace period. Check and set are
    the library's; Watch follows the statuses recorded here."""

    def __init__(self) -> None:
        super().__init__()
        self._statuses: dict[str, health_pb2.HealthCheckResponse.ServingStatus.ValueType] = {}
        self._changed = asyncio.Condition()
        self._shut = False
        self._ended = False

    async def set(
        self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        await super().set(service, status)
        async with self._changed:
            if not self._shut:  # as the library: statuses are frozen once shutting down
                self._statuses[service] = status
                self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        async with self._changed:
            if not self._shut:
                self._shut = True
                for service in self._statuses:
                    self._statuses[service] = NOT_SERVING
                self._changed.notify_all()

    async def end_watches(self) -> None:
        async with self._changed:
            self._ended = True
            self._changed.notify_all()

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        last = None
        async with self._changed:
            while True:
                status = self._statuses.get(
                    request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
                )
                if status != last:
                    await context.write(health_pb2.HealthCheckResponse(status=status))
                    last = status
                if self._ended:
                    return
                await self._changed.wait()


class GrpcServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        service_names: Iterable[str],
        readiness: ReadinessCheck | None = None,
        readiness_interval: float = 5.0,
        interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
        options: Iterable[tuple[str, int]] = (),
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.server = grpc.aio.server(interceptors=list(interceptors), options=list(options))
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = list(service_names)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        # TLS or mutual TLS when given credentials (cadpipe.callers.server_credentials)
        address = f"{host}:{port}"
        self.port = (
            self.server.add_secure_port(address, credentials)
            if credentials is not None
            else self.server.add_insecure_port(address)
        )
        self._readiness = readiness
        self._readiness_interval = readiness_interval
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        await self._set_all(NOT_SERVING)
        await self.health.set(LIVENESS_SERVICE, SERVING)
        await self.server.start()
        await self._check_once()
        self._watch = asyncio.create_task(self._watch_readiness(), name="grpc-readiness")
        logger.info("gRPC server listening on port %d", self.port)

    async def shutdown(self, grace: float) -> None:
        """Health NOT_SERVING, then in-flight RPCs get `grace` seconds to finish."""
        self._stopping = True
        if self._watch:
            self._watch.cancel()
        await self.health.enter_graceful_shutdown()
        await self.health.end_watches()
        await self.server.stop(grace)
        logger.info("gRPC server stopped")

    async def __aenter__(self) -> GrpcServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._stopping:
            await self.shutdown(0)

    async def _set_all(
        self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def _check_once(self) -> bool:
        try:
            if self._readiness:
                await self._readiness()
        except Exception as error:
            logger.warning("not ready: %s", error)
            await self._set_all(NOT_SERVING)
            return False
        if not self._stopping:
            await self._set_all(SERVING)
        return True

    async def _watch_readiness(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._readiness_interval)
            await self._check_once()
