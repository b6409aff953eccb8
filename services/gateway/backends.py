"""The gRPC side: one channel per backend address, generic calls by method path with the
generated serializers (no stubs: the route table says what to call), and health checks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.gateway.errors import GatewayError
from services.gateway.routes import Route

logger = logging.getLogger(__name__)

Metadata = Sequence[tuple[str, str]]

SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True)
class BackendHealth:
    service: str
    address: str
    status: str
    """SERVING, NOT_SERVING, SERVICE_UNKNOWN, or the gRPC code of a failed check."""
    detail: str = ""
    latency_ms: float = 0.0

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "service": self.service,
            "address": self.address,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 1),
        }
        if self.detail:
            out["detail"] = self.detail
        return out


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # behind a headless Kubernetes Service the name resolves to every ready pod: spread
        # calls over them instead of pinning one (pick_first, the default)
        ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
    ]


class Backends:
    """Channels to the gRPC services, keyed by proto service name."""

    def __init__(
        self,
        addresses: Mapping[str, str],
        *,
        options: Sequence[tuple[str, Any]] = (),
        credentials: grpc.ChannelCredentials | None = None,
        call_metadata: Metadata = (),
    ) -> None:
        """credentials: TLS or mutual TLS (cadpipe.callers.channel_credentials), plaintext
        when None. call_metadata goes with every call (the internal service token)."""
        self.addresses = dict(addresses)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._call_metadata = tuple(call_metadata)
        for address in dict.fromkeys(self.addresses.values()):
            self._channels[address] = (
                grpc.aio.secure_channel(address, credentials, options=list(options))
                if credentials is not None
                else grpc.aio.insecure_channel(address, options=list(options))
            )
        self._unary: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}
        self._stream: dict[str, grpc.aio.UnaryStreamMultiCallable[Any, Any]] = {}

    def _channel(self, service: str) -> grpc.aio.Channel:
        address = self.addresses.get(service)
        if address is None:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE, f"no backend is configured for {service}"
            )
        return self._channels[address]

    async def unary(
        self, route: Route, request: Message, *, metadata: Metadata, deadline: float
    ) -> Message:
        call = self._unary.get(route.grpc_path)
        if call is None:
            call = self._channel(route.service).unary_unary(
                route.grpc_path,
                request_serializer=route.request_class.SerializeToString,
                response_deserializer=route.response_class.FromString,
            )
            self._unary[route.grpc_path] = call
        response = await call(
            request, metadata=(*metadata, *self._call_metadata), timeout=deadline
        )
        assert isinstance(response, Message)
        return response

    def server_stream(
        self, route: Route, request: Message, *, metadata: Metadata, timeout: float | None = None
    ) -> grpc.aio.UnaryStreamCall[Any, Any]:
        call = self._stream.get(route.grpc_path)
        if call is None:
            call = self._channel(route.service).unary_stream(
                route.grpc_path,
                request_serializer=route.request_class.SerializeToString,
                response_deserializer=route.response_class.FromString,
            )
            self._stream[route.grpc_path] = call
        return call(request, metadata=(*metadata, *self._call_metadata), timeout=timeout)

    async def check(self, service: str, deadline: float) -> BackendHealth:
        """grpc.health.v1 Check for this proto service on its backend."""
        address = self.addresses[service]
        stub = health_pb2_grpc.HealthStub(self._channels[address])
        started = time.perf_counter()
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=deadline
            )
        except grpc.aio.AioRpcError as error:
            elapsed = (time.perf_counter() - started) * 1000
            # NOT_FOUND is how grpc_health says it has no entry for this service
            status = (
                "SERVICE_UNKNOWN"
                if error.code() == grpc.StatusCode.NOT_FOUND
                else error.code().name
            )
            return BackendHealth(service, address, status, error.details() or "", elapsed)
        elapsed = (time.perf_counter() - started) * 1000
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return BackendHealth(service, address, name, "", elapsed)

    async def check_all(self, deadline: float) -> list[BackendHealth]:
        return list(await asyncio.gather(*(self.check(s, deadline) for s in self.addresses)))

    async def close(self, grace: float | None = None) -> None:
        for address, channel in self._channels.items():
            await channel.close(grace)
            logger.debug("closed channel to %s", address)
