"""The generator's composition root: every adapter built from one Settings, the gRPC server and
the background tasks (resuming lapsed generations, renewing leases) started, and everything shut
down in order on exit.

Readiness is MongoDB and NATS answering: without MongoDB no state can be stored, without NATS
no completion is heard (the status poll would still end each wait, but slowly).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from cadpipe.adapters import mongo
from cadpipe.adapters.owners import MongoOwnerRecords
from cadpipe.callers import (
    CallerInterceptor,
    CallerPolicy,
    channel_credentials,
    server_credentials,
)
from cadpipe.grpc_observe import GrpcServerMetrics, ObservingInterceptor
from cadpipe.grpc_server import GrpcServer
from cadpipe.metrics import ServiceMetrics
from cadpipe.ownership import Ownership
from cadpipe.v1 import generation_pb2, generation_pb2_grpc
from services.generator import domain
from services.generator.generating import Generator, Options
from services.generator.grpc_clients import ScriptsClient, WatcherClient
from services.generator.metrics import GeneratorMetrics
from services.generator.mongo_generations import MongoGenerations
from services.generator.nats_events import Completions, NatsGenerationEvents
from services.generator.ports import ScriptWriter
from services.generator.servicer import GenerationServicer
from services.generator.settings import Settings
from services.generator.templates_writer import TemplatesWriter

logger = logging.getLogger(__name__)

SERVICE_NAME = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name
ADMIN_METHODS = [f"/{SERVICE_NAME}/GetAiMetrics"]


@dataclass(frozen=True)
class Running:
    port: int
    generator: Generator
    metrics: ServiceMetrics


def make_writer(settings: Settings) -> ScriptWriter:
    if settings.generator_provider == "openai":
        # the adapter (and httpx) only when configured
        from services.generator.openai_provider import OpenAIWriter

        return OpenAIWriter(
            base_url=settings.openai_base_url,
            model=settings.openai_model,
            api_key=(
                settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
            ),
            timeout_seconds=settings.openai_timeout_seconds,
            max_retries=settings.openai_max_retries,
        )
    return TemplatesWriter()


def limits_from(settings: Settings) -> domain.Limits:
    return domain.Limits(
        max_prompt_chars=settings.max_prompt_chars,
        max_rounds=settings.max_rounds,
        default_max_rounds=settings.default_max_rounds,
        max_script_bytes=settings.max_script_bytes,
    )


def _channel(settings: Settings, address: str) -> grpc.aio.Channel:
    """Plaintext, or TLS (mutual with a client certificate) when CLIENT_TLS_CA_FILE is set;
    round robin over every ready pod behind a headless Service, as the gateway's channels."""
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))
    ]
    if settings.client_tls_server_name:
        options.append(("grpc.ssl_target_name_override", settings.client_tls_server_name))
    if not settings.client_tls_ca_file:
        return grpc.aio.insecure_channel(address, options=options)
    credentials = channel_credentials(
        settings.client_tls_ca_file, settings.client_tls_cert_file, settings.client_tls_key_file
    )
    return grpc.aio.secure_channel(address, credentials, options=options)


async def _every(seconds: float, what: str, step: object) -> None:
    assert callable(step)
    while True:
        try:
            await step()
        except Exception as error:  # retried at the next tick
            logger.warning("%s failed: %s", what, error)
        await asyncio.sleep(seconds)


@asynccontextmanager
async def start(
    settings: Settings, *, writer: ScriptWriter | None = None
) -> AsyncIterator[Running]:
    """writer: the script writer to use instead of the one the settings name (tests)."""
    async with AsyncExitStack() as stack:
        observed = ServiceMetrics("generator")
        metrics = GeneratorMetrics(observed.registry)
        mongo_client, db = mongo.connect(settings, event_listeners=observed.mongo_listeners())
        stack.callback(mongo_client.close)
        store = MongoGenerations(db)
        await mongo.in_thread(store.ensure_indexes)  # fails the start without MongoDB

        token = settings.service_token.get_secret_value() if settings.service_token else None
        scripts_channel = _channel(settings, settings.scripts_addr)
        stack.push_async_callback(scripts_channel.close)
        watcher_channel = _channel(settings, settings.watcher_addr)
        stack.push_async_callback(watcher_channel.close)
        scripts = ScriptsClient(
            scripts_channel, service_token=token, timeout=settings.call_timeout_seconds
        )
        watcher = WatcherClient(
            watcher_channel, service_token=token, timeout=settings.call_timeout_seconds
        )

        events = NatsGenerationEvents(
            settings,
            publish_timeout=settings.publish_timeout_seconds,
            error_cb=observed.nats_error_cb,
        )
        stack.push_async_callback(events.close)
        await events.connect()

        limits = limits_from(settings)
        if writer is None:
            writer = make_writer(settings)
            closing = getattr(writer, "aclose", None)  # the openai writer's HTTP client
            if closing is not None:
                stack.push_async_callback(closing)
        generator = Generator(
            store=store,
            writer=writer,
            uploader=scripts,
            completions=Completions(events, watcher, poll_seconds=settings.completion_poll_seconds),
            reports=watcher,
            events=events,
            # the index's owner; the generator reads no bucket (a project the index lost is
            # claimed again by its first upload, which the script service checks against S3)
            owners=Ownership(MongoOwnerRecords(db)),
            options=Options(
                limits=limits,
                deadline_seconds=settings.generation_deadline_seconds,
                lease_seconds=settings.lease_seconds,
                max_concurrent=settings.max_concurrent_generations,
                freecad_version=settings.freecad_version,
                runner=settings.generator_id or f"{socket.gethostname()}-{os.getpid()}-{id(store)}",
            ),
            observer=metrics.observer(),
        )
        metrics.watch_running(lambda: generator.running)
        stack.enter_context(observed.serving(settings.grpc_host, settings.metrics_port))

        async def ready() -> None:
            await mongo.in_thread(store.ping)
            await events.check()

        callers = CallerPolicy.from_settings(settings)  # warns when the port is open to anyone
        server = GrpcServer(
            settings.grpc_host,
            settings.grpc_port,
            service_names=[SERVICE_NAME],
            readiness=ready,
            readiness_interval=settings.readiness_interval_seconds,
            interceptors=[
                ObservingInterceptor(GrpcServerMetrics(observed.registry)),
                CallerInterceptor(callers, admin_methods=ADMIN_METHODS),
            ],
            credentials=server_credentials(settings),
        )
        generation_pb2_grpc.add_GenerationServiceServicer_to_server(
            GenerationServicer(generator, limits), server.server
        )
        tasks = [
            asyncio.create_task(
                _every(
                    settings.resume_interval_seconds,
                    "resuming generations",
                    generator.resume_lapsed,
                ),
                name="generator-resume",
            ),
            asyncio.create_task(
                _every(settings.lease_seconds / 3, "renewing leases", generator.renew_leases),
                name="generator-leases",
            ),
        ]
        await server.start()
        logger.info(
            "generator serving on port %d (provider %s)", server.port, settings.generator_provider
        )
        try:
            yield Running(port=server.port, generator=generator, metrics=observed)
        finally:
            await server.shutdown(settings.shutdown_grace_seconds)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # running generations stop where they are (stored) and are handed on at once
            await generator.stop()
            logger.info("generator stopped")
