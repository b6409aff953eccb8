"""The real gateway (services/gateway/bootstrap.py) on a free port in front of real gRPC servers
on free ports running the fakes of gateway_fakes.py, and an HTTP client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
import pytest
from gateway_fakes import FakeArtifacts, FakeScripts, FakeStatus, Recorder

from cadpipe.grpc_server import GrpcServer
from cadpipe.v1 import artifacts_pb2_grpc, scripts_pb2_grpc, status_pb2_grpc
from services.gateway.bootstrap import Running, start
from services.gateway.settings import (
    ARTIFACT_SERVICE,
    MONITORING_SERVICE,
    SCRIPT_SERVICE,
    STATUS_SERVICE,
    Settings,
)


@dataclass
class Stack:
    gateway: Running
    http: httpx.AsyncClient
    recorder: Recorder
    scripts: GrpcServer
    watcher: GrpcServer
    status: FakeStatus
    settings: Settings


def gateway_settings(scripts_port: int, watcher_port: int, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "http_host": "127.0.0.1",
        "http_port": 0,
        "scripts_addr": f"127.0.0.1:{scripts_port}",
        "watcher_addr": f"127.0.0.1:{watcher_port}",
        "grpc_deadline_seconds": 5.0,
        "readiness_timeout_seconds": 1.0,
        "shutdown_grace_seconds": 1.0,
        # these tests are about transcoding; authentication has its own (tests/security)
        "auth_mode": "none",
        **overrides,
    }
    return Settings.model_validate(values)


async def start_stack(stack: AsyncExitStack, **overrides: object) -> Stack:
    recorder = Recorder()
    scripts = await stack.enter_async_context(
        GrpcServer("127.0.0.1", 0, service_names=[SCRIPT_SERVICE])
    )
    scripts_pb2_grpc.add_ScriptServiceServicer_to_server(FakeScripts(recorder), scripts.server)
    watcher = await stack.enter_async_context(
        # as the real watcher, which serves MonitoringService too (no fake of it here)
        GrpcServer(
            "127.0.0.1", 0, service_names=[STATUS_SERVICE, ARTIFACT_SERVICE, MONITORING_SERVICE]
        )
    )
    status = FakeStatus(recorder)
    status_pb2_grpc.add_StatusServiceServicer_to_server(status, watcher.server)
    artifacts_pb2_grpc.add_ArtifactServiceServicer_to_server(
        FakeArtifacts(recorder), watcher.server
    )
    await scripts.start()
    await watcher.start()
    settings = gateway_settings(scripts.port, watcher.port, **overrides)
    running = await stack.enter_async_context(start(settings))
    http = await stack.enter_async_context(
        httpx.AsyncClient(base_url=running.url, timeout=httpx.Timeout(10.0))
    )
    return Stack(running, http, recorder, scripts, watcher, status, settings)


@pytest.fixture
async def gw() -> AsyncIterator[Stack]:
    async with AsyncExitStack() as stack:
        yield await start_stack(stack)
