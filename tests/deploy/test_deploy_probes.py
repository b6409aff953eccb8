"""What the Kubernetes probes ask a gRPC service, asked of a real server: liveness and startup
probes query the "liveness" entry, readiness the overall "" entry (see deploy/k8s/base)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cadpipe.grpc_server import LIVENESS_SERVICE, GrpcServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _status(port: int, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return int(response.status)


async def test_a_dependency_outage_makes_the_pod_unready_but_not_dead() -> None:
    async def mongodb_down() -> None:
        raise ConnectionError("mongodb unreachable")

    async with GrpcServer(
        "127.0.0.1", 0, service_names=["cadpipe.v1.Example"], readiness=mongodb_down
    ) as server:
        await server.start()
        assert await _status(server.port, "") == NOT_SERVING
        assert await _status(server.port, "cadpipe.v1.Example") == NOT_SERVING
        assert await _status(server.port, LIVENESS_SERVICE) == SERVING


async def test_shutdown_turns_liveness_off_too() -> None:
    async def healthy() -> None:
        return None

    server = GrpcServer("127.0.0.1", 0, service_names=[], readiness=healthy)
    async with server:
        await server.start()
        assert await _status(server.port, "") == SERVING
        assert await _status(server.port, LIVENESS_SERVICE) == SERVING
        # what a probe sees between SIGTERM and the end of the grace period
        await server.health.enter_graceful_shutdown()
        assert await _status(server.port, LIVENESS_SERVICE) == NOT_SERVING
        assert await _status(server.port, "") == NOT_SERVING
        await server.shutdown(0)
