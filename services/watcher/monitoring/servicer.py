"""The gRPC entrypoint of cadpipe.v1.MonitoringService: request -> Monitoring use case ->
response message.

A failed real check is UNAVAILABLE with the whole report as the one detail of a google.rpc.Status
(grpc-status-details-bin): the gateway answers 503 with the report under `details`, as
grpc-gateway does, and a gRPC client reads it the usual way for rich errors. Other errors are
cadpipe.errors, turned into statuses by the server interceptor (cadpipe.grpc_observe).

Everything but GetHealth shows the system's insides (configuration, bucket, every project):
the watcher's CallerInterceptor serves those methods to unrestricted callers only.
"""

from __future__ import annotations

import logging
from typing import Any, TypeAlias

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message
from google.rpc import status_pb2

from cadpipe.timestamps import to_timestamp
from cadpipe.v1 import monitoring_pb2, monitoring_pb2_grpc
from services.watcher.monitoring.reports import Check, LatencySummary, VersionRow
from services.watcher.monitoring.use_cases import Monitoring

logger = logging.getLogger(__name__)

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def check_message(check: Check) -> monitoring_pb2.Check:
    return monitoring_pb2.Check(
        name=check.name,
        status=check.status,
        latency_ms=check.latency_ms,
        detail=check.detail,
        required=check.required,
    )


def latency_message(summary: LatencySummary) -> monitoring_pb2.LatencySummary:
    return monitoring_pb2.LatencySummary(
        samples=summary.samples,
        p50_seconds=summary.p50_seconds,
        p95_seconds=summary.p95_seconds,
        max_seconds=summary.max_seconds,
    )


def version_message(row: VersionRow) -> monitoring_pb2.VersionProcessing:
    return monitoring_pb2.VersionProcessing(
        version=row.version,
        state=row.state,
        uploaded_at=to_timestamp(row.uploaded_at),
        finished_at=to_timestamp(row.finished_at),
        detected_at=to_timestamp(row.detected_at),
        duration_seconds=row.duration_seconds,
        detection_latency_seconds=row.detection_latency_seconds,
        event_published=row.event_published,
        error=row.error,
        exit_reason=row.exit_reason,
        formats=list(row.formats),
        started_at=to_timestamp(row.started_at),
        queued_seconds=row.queued_seconds,
    )


async def fail_with_report(context: Context, message: str, report: Message) -> None:
    """UNAVAILABLE, with the report as the status detail (HTTP 503 through the gateway)."""
    detail = AnyProto()
    detail.Pack(report)
    status = status_pb2.Status(
        code=grpc.StatusCode.UNAVAILABLE.value[0], message=message, details=[detail]
    )
    await context.abort(
        grpc.StatusCode.UNAVAILABLE,
        message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )


class MonitoringServicer(monitoring_pb2_grpc.MonitoringServiceServicer):
    def __init__(self, monitoring: Monitoring) -> None:
        self._monitoring = monitoring

    async def GetHealth(
        self, request: monitoring_pb2.GetHealthRequest, context: Context
    ) -> monitoring_pb2.HealthReport:
        report = await self._monitoring.health()
        reply = monitoring_pb2.HealthReport(
            status=report.status,
            checks=[check_message(c) for c in report.checks],
            checked_at=to_timestamp(report.checked_at),
            served_by=report.served_by,
        )
        if not report.healthy:
            failed = ", ".join(c.name for c in report.checks if c.failed)
            logger.warning("health degraded: %s", failed)
            await fail_with_report(context, f"degraded: {failed}", reply)
        return reply

    async def GetS3Status(
        self, request: monitoring_pb2.GetS3StatusRequest, context: Context
    ) -> monitoring_pb2.S3Status:
        status = await self._monitoring.s3_status()
        reply = monitoring_pb2.S3Status(
            bucket=status.bucket,
            endpoint=status.endpoint,
            reachable=status.reachable,
            latency_ms=status.latency_ms,
            detail=status.detail,
            prefixes=[
                monitoring_pb2.PrefixStats(
                    prefix=p.prefix, objects=p.objects, bytes=p.bytes, truncated=p.truncated
                )
                for p in status.prefixes
            ],
            max_objects_per_prefix=status.max_objects_per_prefix,
        )
        if not status.reachable:
            await fail_with_report(context, f"bucket {status.bucket}: {status.detail}", reply)
        return reply

    async def ValidateConfig(
        self, request: monitoring_pb2.ValidateConfigRequest, context: Context
    ) -> monitoring_pb2.ConfigValidation:
        validation = await self._monitoring.validate_config()
        return monitoring_pb2.ConfigValidation(
            valid=validation.valid, checks=[check_message(c) for c in validation.checks]
        )

    async def GetConfigSummary(
        self, request: monitoring_pb2.GetConfigSummaryRequest, context: Context
    ) -> monitoring_pb2.ConfigSummary:
        service, served_by, settings = self._monitoring.config_summary()
        return monitoring_pb2.ConfigSummary(
            service=service,
            served_by=served_by,
            settings=[
                monitoring_pb2.ConfigEntry(
                    name=s.name,
                    value=s.value,
                    secret=s.secret,
                    from_environment=s.from_environment,
                )
                for s in settings
            ],
        )

    async def GetProcessingStatus(
        self, request: monitoring_pb2.GetProcessingStatusRequest, context: Context
    ) -> monitoring_pb2.ProcessingStatus:
        status = await self._monitoring.processing_status(request.project)
        return monitoring_pb2.ProcessingStatus(
            project=status.project,
            versions=[version_message(r) for r in status.versions],
            counts=status.counts,
            truncated=status.truncated,
        )

    async def TestS3Upload(
        self, request: monitoring_pb2.TestS3UploadRequest, context: Context
    ) -> monitoring_pb2.S3UploadTest:
        trip = await self._monitoring.s3_round_trip(request.size_bytes)
        reply = monitoring_pb2.S3UploadTest(
            ok=trip.ok,
            bucket=trip.bucket,
            key=trip.key,
            size_bytes=trip.size_bytes,
            steps=[check_message(s) for s in trip.steps],
            total_ms=trip.total_ms,
            cleaned_up=trip.cleaned_up,
        )
        if not trip.ok:
            failed = next((s for s in trip.steps if s.status != "ok"), None)
            reason = f"{failed.name}: {failed.detail}" if failed else "failed"
            logger.warning("S3 round trip failed at %s", reason)
            await fail_with_report(context, f"S3 round trip failed at {reason}", reply)
        return reply

    async def GetMetricsSummary(
        self, request: monitoring_pb2.GetMetricsSummaryRequest, context: Context
    ) -> monitoring_pb2.MetricsSummary:
        summary = await self._monitoring.metrics_summary(request.window_seconds)
        return monitoring_pb2.MetricsSummary(
            since=to_timestamp(summary.since),
            uploads=summary.uploads,
            jobs_by_state=summary.jobs_by_state,
            pending=summary.pending,
            unpublished_events=summary.unpublished_events,
            detection_latency=latency_message(summary.detection_latency),
            job_duration=latency_message(summary.job_duration),
            worker_queue=summary.worker_queue,
            worker_in_flight=summary.worker_in_flight,
            completion_events=summary.completion_events,
            computed_at=to_timestamp(summary.computed_at),
        )
