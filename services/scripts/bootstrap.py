"""The script service's composition root: every adapter is built here from one Settings.

Readiness (the "" health entry, what Kubernetes' readiness probe asks) is S3 and MongoDB
answering. NATS is left out on purpose: uploads work while NATS is away (their events wait in
the outbox), so a NATS outage must not take every replica out of the load balancer. Whether
events flow is reported apart, in the health entry EVENTS_HEALTH, for dashboards and alerts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from cadpipe.adapters import mongo, s3
from cadpipe.adapters.owners import BucketOwners, MongoOwnerRecords
from cadpipe.callers import CallerInterceptor, CallerPolicy, server_credentials
from cadpipe.grpc_observe import GrpcServerMetrics, ObservingInterceptor
from cadpipe.grpc_server import NOT_SERVING, SERVING, GrpcServer
from cadpipe.metrics import ServiceMetrics
from cadpipe.ownership import Ownership
from cadpipe.v1 import scripts_pb2, scripts_pb2_grpc
from services.scripts import mongo_index
from services.scripts.domain import Limits
from services.scripts.metrics import make_metrics
from services.scripts.publisher import OutboxPublisher
from services.scripts.reconcile import Reconciler
from services.scripts.reindex import ReindexReport, reindex
from services.scripts.s3_store import S3ScriptStore
from services.scripts.servicer import ScriptServicer
from services.scripts.settings import Settings
from services.scripts.versioning import Options, Scripts

logger = logging.getLogger(__name__)

SERVICE_NAME = scripts_pb2.DESCRIPTOR.services_by_name["ScriptService"].full_name
S3_CONNECTIONS = 64
EVENTS_HEALTH = "cadpipe.scripts.events"
"""SERVING while uploaded events reach JetStream, NOT_SERVING while they wait in the outbox."""


@dataclass(frozen=True)
class Running:
    port: int
    scripts: Scripts
    publisher: OutboxPublisher
    reconciler: Reconciler


@dataclass(frozen=True)
class _Stores:
    store: S3ScriptStore
    index: mongo_index.MongoProjectIndex
    outbox: mongo_index.MongoOutbox
    claims: mongo_index.MongoIdempotencyClaims
    owners: Ownership
    db: Any


async def _open_stores(
    settings: Settings,
    stack: AsyncExitStack,
    metrics: ServiceMetrics | None = None,
    on_conflict: Callable[[], None] = lambda: None,
) -> _Stores:
    blocking_bucket = s3.open_bucket(
        settings,
        stack,
        instrument=metrics.instrument_s3 if metrics is not None else None,
        max_pool_connections=S3_CONNECTIONS,
    )
    listeners = metrics.mongo_listeners() if metrics is not None else []
    mongo_client, db = mongo.connect(settings, event_listeners=listeners)
    stack.callback(mongo_client.close)
    # fails the start when MongoDB does not answer, with the driver's message
    await mongo.in_thread(lambda: mongo_index.ensure_indexes(db))
    # the puts need no thread (obstore, s3_put.py), but the HEAD probes and reads of many
    # uploads may be in flight at once: a thread for each pooled connection, apart from the
    # MongoDB calls' threads
    bucket = s3.AsyncBucket(blocking_bucket, threads=S3_CONNECTIONS)
    stack.callback(bucket.close)
    return _Stores(
        store=S3ScriptStore(bucket, on_conflict=on_conflict),
        index=mongo_index.MongoProjectIndex(db),
        outbox=mongo_index.MongoOutbox(db),
        claims=mongo_index.MongoIdempotencyClaims(db),
        owners=Ownership(MongoOwnerRecords(db), BucketOwners(bucket)),
        db=db,
    )


def options_from(settings: Settings) -> Options:
    return Options(
        limits=Limits(
            max_script_bytes=settings.max_script_bytes,
            max_metadata_entries=settings.max_metadata_entries,
            max_metadata_key_chars=settings.max_metadata_key_chars,
            max_metadata_value_chars=settings.max_metadata_value_chars,
            max_metadata_bytes=settings.max_metadata_bytes,
        ),
        max_version_attempts=settings.max_version_attempts,
        puts_in_flight=settings.puts_in_flight,
        idempotency_wait=settings.idempotency_wait_seconds,
        idempotency_stale=settings.idempotency_stale_seconds,
    )


@asynccontextmanager
async def start(settings: Settings) -> AsyncIterator[Running]:
    async with AsyncExitStack() as stack:
        observed = ServiceMetrics("scripts")
        metrics = make_metrics(observed.registry)
        stores = await _open_stores(settings, stack, observed, metrics.version_conflicts.inc)
        metrics.watch_outbox(stores.outbox.pending_count)
        stack.enter_context(observed.serving(settings.grpc_host, settings.metrics_port))

        async def ready() -> None:
            await asyncio.gather(
                stores.store.ping(), mongo.in_thread(lambda: mongo.ping(stores.db))
            )

        # Oversize scripts must reach the service to get INVALID_ARGUMENT with the limit in the
        # message, not a transport error: accept messages well above the script limit.
        max_message = max(4 * 1024 * 1024, 2 * settings.max_script_bytes + 64 * 1024)
        callers = CallerPolicy.from_settings(settings)
        server = GrpcServer(
            settings.grpc_host,
            settings.grpc_port,
            service_names=[SERVICE_NAME],
            readiness=ready,
            readiness_interval=settings.readiness_interval_seconds,
            options=[("grpc.max_receive_message_length", max_message)],
            # observed first: refusals of unidentified calls are counted too
            interceptors=[
                ObservingInterceptor(GrpcServerMetrics(observed.registry)),
                CallerInterceptor(callers),
            ],
            credentials=server_credentials(settings),
        )
        events_flow: list[bool] = []

        async def report_events(flowing: bool) -> None:
            if events_flow != [flowing]:
                events_flow[:] = [flowing]
                await server.health.set(EVENTS_HEALTH, SERVING if flowing else NOT_SERVING)

        publisher = OutboxPublisher(
            stores.outbox,
            settings,
            poll_interval=settings.outbox_poll_seconds,
            max_backoff=settings.outbox_max_backoff_seconds,
            publish_timeout=settings.publish_timeout_seconds,
            on_state=report_events,
            on_published=metrics.events_published.inc,
            error_cb=observed.nats_error_cb,
        )
        scripts = Scripts(
            stores.store,
            stores.index,
            stores.outbox,
            stores.claims,
            options_from(settings),
            owners=stores.owners,
            on_event=publisher.wake,
        )
        servicer = ScriptServicer(scripts)
        scripts_pb2_grpc.add_ScriptServiceServicer_to_server(servicer, server.server)
        await server.health.set(EVENTS_HEALTH, NOT_SERVING)
        reconciler = Reconciler(
            scripts,
            stores.store,
            stores.index,
            stores.outbox,
            interval=settings.reconcile_interval_seconds,
            full_every=settings.reconcile_full_every,
        )
        publishing = asyncio.create_task(publisher.run(), name="outbox-publisher")
        reconciling = asyncio.create_task(reconciler.run(), name="reconciler")
        try:
            await server.start()
            yield Running(
                port=server.port, scripts=scripts, publisher=publisher, reconciler=reconciler
            )
        finally:
            await server.shutdown(settings.shutdown_grace_seconds)
            await scripts.wait_idle()
            reconciling.cancel()
            await asyncio.gather(reconciling, return_exceptions=True)
            await publisher.stop(publishing)
            logger.info("script service stopped")


async def run_reindex(settings: Settings, project: str | None = None) -> ReindexReport:
    async with AsyncExitStack() as stack:
        stores = await _open_stores(settings, stack)
        return await reindex(
            stores.store,
            stores.index,
            stores.outbox,
            stores.claims,
            owners=stores.owners,
            project=project,
        )
