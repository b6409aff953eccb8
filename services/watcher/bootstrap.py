"""The watcher's composition root: every adapter built from one Settings, the gRPC server and the
background tasks started, and everything shut down in order on exit."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from cadpipe.adapters import mongo, s3
from cadpipe.adapters.owners import BucketOwners, MongoOwnerRecords
from cadpipe.callers import CallerInterceptor, CallerPolicy, server_credentials
from cadpipe.grpc_observe import GrpcServerMetrics, ObservingInterceptor
from cadpipe.grpc_server import GrpcServer
from cadpipe.metrics import ServiceMetrics
from cadpipe.ownership import Ownership
from cadpipe.settings import S3Settings, summarize
from cadpipe.timestamps import to_datetime
from cadpipe.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    events_pb2,
    monitoring_pb2,
    monitoring_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)
from services.watcher import domain
from services.watcher.broadcast import StatusBroadcast
from services.watcher.metrics import WatcherMetrics
from services.watcher.mongo_jobs import MongoJobs
from services.watcher.monitoring.adapters import (
    BucketProbe,
    GrpcHealthClient,
    MongoJobsView,
    NatsStreamsView,
)
from services.watcher.monitoring.ports import MonitoringConfig
from services.watcher.monitoring.servicer import MonitoringServicer
from services.watcher.monitoring.use_cases import Monitoring
from services.watcher.nats_events import NatsEvents
from services.watcher.reads import Reads
from services.watcher.s3_results import S3Results
from services.watcher.servicer import ArtifactServicer, StatusServicer
from services.watcher.settings import Settings
from services.watcher.watching import Watcher, WatcherConfig

logger = logging.getLogger(__name__)

SERVICE_NAMES = (
    status_pb2.DESCRIPTOR.services_by_name["StatusService"].full_name,
    artifacts_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name,
    monitoring_pb2.DESCRIPTOR.services_by_name["MonitoringService"].full_name,
)
SCRIPT_SERVICE = "cadpipe.v1.ScriptService"


@dataclass(frozen=True)
class Running:
    port: int
    watcher: Watcher
    bucket: s3.Bucket
    """The watcher's own S3 adapter (the benchmark counts its requests)."""
    metrics: ServiceMetrics


def watcher_config(settings: Settings) -> WatcherConfig:
    return WatcherConfig(
        policy=domain.Policy(
            timeout=dt.timedelta(seconds=settings.watcher_job_timeout_seconds),
            error_log_grace=dt.timedelta(seconds=settings.watcher_error_log_grace_seconds),
            queue_timeout=dt.timedelta(seconds=settings.watcher_queue_timeout_seconds),
        ),
        poll=domain.PollPolicy(
            interval=settings.watcher_poll_interval_seconds,
            max_interval=settings.watcher_poll_max_interval_seconds,
            backoff_ratio=settings.watcher_poll_backoff_ratio,
            queued_interval=settings.watcher_queued_poll_interval_seconds,
            full_interval=settings.watcher_full_check_interval_seconds,
            queued_reads_per_second=settings.watcher_queued_reads_per_second,
        ),
        lease=dt.timedelta(seconds=settings.watcher_lease_seconds),
        sweep_after=dt.timedelta(seconds=settings.watcher_sweep_after_seconds),
        max_concurrent_checks=settings.watcher_max_concurrent_checks,
    )


@asynccontextmanager
async def start(settings: Settings) -> AsyncIterator[Running]:
    async with AsyncExitStack() as stack:
        observed = ServiceMetrics("watcher")
        metrics = WatcherMetrics(observed.registry)
        bucket = s3.open_bucket(settings, stack, instrument=observed.instrument_s3)
        store = s3.AsyncBucket(bucket)
        presign_bucket = None
        if settings.s3_presign_endpoint_url:
            presign_settings = S3Settings(
                **{**settings.model_dump(), "s3_endpoint_url": settings.s3_presign_endpoint_url}
            )
            presign_bucket = s3.AsyncBucket(s3.open_bucket(presign_settings, stack))
        results = S3Results(store, presign_bucket=presign_bucket)

        mongo_client, db = mongo.connect(settings, event_listeners=observed.mongo_listeners())
        stack.callback(mongo_client.close)
        jobs = MongoJobs(db)
        await jobs.ensure_indexes()

        statuses = StatusBroadcast()
        events = NatsEvents(
            settings,
            durable=settings.watcher_consumer_durable,
            publish_timeout=settings.publish_timeout_seconds,
            error_cb=observed.nats_error_cb,
        )
        stack.push_async_callback(events.close)
        watcher = Watcher(
            jobs,
            results,
            events,
            statuses,
            watcher_config(settings),
            owner=settings.watcher_id,
            on_decided=metrics.observe_decision,
        )
        metrics.watch(watcher.counters, lambda: len(watcher.pending), lambda: statuses.watching)
        stack.enter_context(observed.serving(settings.grpc_host, settings.metrics_port))
        await events.connect(on_nudge=watcher.nudge, on_status=statuses.publish)

        async def ready() -> None:
            await results.ping()
            await jobs.ping()
            await events.check()

        server = GrpcServer(
            settings.grpc_host,
            settings.grpc_port,
            service_names=SERVICE_NAMES,
            readiness=ready,
            readiness_interval=settings.readiness_interval_seconds,
            # observed first: refused calls are counted too
            interceptors=[
                ObservingInterceptor(GrpcServerMetrics(observed.registry)),
                _caller_interceptor(settings),
            ],
            credentials=server_credentials(settings),
        )
        reads = Reads(
            jobs,
            results,
            presign_expiry_seconds=settings.presign_expiry_seconds,
            max_log_bytes=settings.max_log_bytes,
            owners=Ownership(MongoOwnerRecords(db), BucketOwners(store)),
        )
        status_pb2_grpc.add_StatusServiceServicer_to_server(
            StatusServicer(reads, statuses), server.server
        )
        artifacts_pb2_grpc.add_ArtifactServiceServicer_to_server(
            ArtifactServicer(reads), server.server
        )
        monitoring = await _monitoring(settings, stack, store, db, events)
        monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server(
            MonitoringServicer(monitoring), server.server
        )

        async def accept(event: events_pb2.ScriptUploaded) -> None:
            await watcher.accept_upload(
                event.project,
                event.version,
                uploaded_at=to_datetime(event.uploaded_at),
                script_key=event.key,
                project_owner=event.owner,
            )

        tasks = [
            asyncio.create_task(watcher.run(), name="watcher-poll"),
            asyncio.create_task(events.consume_forever(accept), name="watcher-consume"),
        ]
        await server.start()
        logger.info("watcher %s serving on port %d", settings.watcher_id, server.port)
        try:
            yield Running(port=server.port, watcher=watcher, bucket=bucket, metrics=observed)
        finally:
            # Not serving first; streams end so the grace period is not spent waiting on them;
            # in-flight RPCs finish; then the background work stops and this replica's pending
            # versions are handed to the others; NATS drains and clients close (exit stack).
            await server.health.enter_graceful_shutdown()
            statuses.close()
            await server.shutdown(settings.shutdown_grace_seconds)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await watcher.release()
            except Exception as error:  # the leases lapse on their own
                logger.warning("could not release pending versions: %s", error)


MONITORING_PREFIX = "/cadpipe.v1.MonitoringService/"


def _caller_interceptor(settings: Settings) -> CallerInterceptor:
    """Project reads answer their owner only (Reads); monitoring is for admins, but its health
    is a public route of the gateway, which forwards no caller for it (docs/security.md)."""
    return CallerInterceptor(
        CallerPolicy.from_settings(settings),
        public_methods={MONITORING_PREFIX + "GetHealth"},
        admin_methods=[MONITORING_PREFIX],
    )


async def _monitoring(
    settings: Settings,
    stack: AsyncExitStack,
    bucket: s3.AsyncBucket,
    db: Any,
    events: NatsEvents,
) -> Monitoring:
    """MonitoringService over the watcher's own clients, plus a channel to the script service
    for its health."""
    scripts_health = None
    if settings.scripts_addr:
        channel = grpc.aio.insecure_channel(settings.scripts_addr)
        stack.push_async_callback(channel.close)
        scripts_health = GrpcHealthClient(
            channel, SCRIPT_SERVICE, settings.monitoring_check_timeout_seconds
        )
    return Monitoring(
        s3=BucketProbe(bucket),
        jobs=MongoJobsView(db),
        streams=NatsStreamsView(events),
        config=MonitoringConfig(
            bucket=settings.s3_bucket,
            s3_endpoint=settings.s3_endpoint_url,
            s3_presign_endpoint=settings.s3_presign_endpoint_url,
            watcher_consumer=settings.watcher_consumer_durable,
            worker_consumer=settings.worker_consumer_name,
            job_timeout_seconds=settings.watcher_job_timeout_seconds,
            check_timeout_seconds=settings.monitoring_check_timeout_seconds,
            max_list_objects=settings.monitoring_max_list_objects,
            scripts_addr=settings.scripts_addr,
            served_by=settings.watcher_id,
            settings=tuple(summarize(settings)),
        ),
        scripts_health=scripts_health,
    )
