"""The watcher's settings, read from the environment once, in main().

Polling cost: a light check of one pending version is one GET on an exact key (its started
record while it is queued, its marker once started); a full look adds the marker while queued
and, while there is no marker, one LIST of that version's log prefix, whatever the size of the
bucket. A started version is checked every `watcher_poll_interval_seconds` while it is young, a
queued one every `watcher_queued_poll_interval_seconds`, then less often as they age (a tenth of
the age, at most `watcher_poll_max_interval_seconds` apart); full looks, which see the older
contract's markers and error logs, come every `watcher_full_check_interval_seconds`, backing off
the same way. Our worker's nudges wake the check at once: a start nudge a light check, a finish
nudge a full look. However many versions are queued, their checks together read about
`watcher_queued_reads_per_second` keys a second: each queued version's intervals stretch to
share them.
"""

from __future__ import annotations

import os
import socket
import uuid

from pydantic import Field, model_validator

from cadpipe.settings import (
    MIB,
    MODEL_CONFIG,
    GrpcSecuritySettings,
    GrpcServerSettings,
    MongoSettings,
    NatsSettings,
    S3Settings,
)


def _default_watcher_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Settings(S3Settings, MongoSettings, NatsSettings, GrpcServerSettings, GrpcSecuritySettings):
    model_config = MODEL_CONFIG

    grpc_port: int = Field(default=50052, ge=0, le=65535)

    watcher_poll_interval_seconds: float = Field(
        default=0.1, gt=0, description="Check interval of a young pending version"
    )
    watcher_queued_poll_interval_seconds: float = Field(
        default=0.5,
        gt=0,
        description="Check interval of a young queued version (a GET of its started record; "
        "the worker's start nudge checks at once)",
    )
    watcher_full_check_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Interval of full looks at a young pending version (marker, started record, "
        "its logs): how versions of older-contract workers are seen",
    )
    watcher_queued_reads_per_second: float = Field(
        default=20.0,
        gt=0,
        description="S3 reads per second, about, spent on all queued versions together: each "
        "one's checks come less often as more are queued, so polling does not grow with the "
        "queue (the worker's start nudge still checks a version at once)",
    )
    watcher_poll_max_interval_seconds: float = Field(
        default=2.0, gt=0, description="Check interval of a version pending for long"
    )
    watcher_poll_backoff_ratio: float = Field(
        default=0.1, ge=0, description="Check interval as a fraction of the version's age"
    )
    watcher_job_timeout_seconds: float = Field(
        default=600.0, gt=0, description="No result this long after the start means timeout"
    )
    watcher_queue_timeout_seconds: float = Field(
        default=1800.0,
        gt=0,
        description="Never started this long after the upload means timeout, and the version "
        "is never run (with workers of the older contract, which record no start, the whole "
        "timeout)",
    )
    watcher_error_log_grace_seconds: float = Field(
        default=1.0,
        ge=0,
        description="An _error_ log with no marker means error once it has been there this long "
        "(a worker may write its error log just before its marker)",
    )
    watcher_lease_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A replica polls the pending versions it holds a lease on; another replica "
        "takes over versions whose lease lapsed (a crashed replica's) after this long",
    )
    watcher_sweep_after_seconds: float = Field(
        default=5.0,
        gt=0,
        description="A decided version whose event is still unpublished this long after the "
        "decision is published again by whichever replica sweeps first",
    )
    watcher_max_concurrent_checks: int = Field(default=16, ge=1, le=256)
    watcher_consumer_durable: str = Field(
        default="cadpipe-watcher",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="JetStream durable consumer of uploaded events, shared by every replica",
    )
    watcher_id: str = Field(
        default_factory=_default_watcher_id,
        min_length=1,
        description="Owner name of this replica's leases; a stable one (a StatefulSet pod name) "
        "takes its own pending versions back at once after a restart",
    )
    publish_timeout_seconds: float = Field(default=2.0, gt=0)

    presign_expiry_seconds: int = Field(
        default=900, ge=1, le=7 * 24 * 3600, description="Lifetime of a download URL"
    )
    s3_presign_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint written into download URLs, when clients reach S3 at another "
        "address than this service does (a MinIO service name inside a cluster)",
    )
    max_log_bytes: int = Field(
        default=MIB, ge=1024, le=3 * MIB, description="GetLog returns at most this much (the end)"
    )

    # --- monitoring (cadpipe.v1.MonitoringService, GET /api/monitoring/...) ---
    scripts_addr: str = Field(
        default="127.0.0.1:50051",
        description="The script service, whose grpc.health.v1 the health report includes; "
        "empty: left out",
    )
    worker_consumer_name: str = Field(
        default="cadpipe-worker",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The workers' JetStream durable (CONSUMER_NAME of the workers): its backlog "
        "is the workers' queue in the monitoring reports",
    )
    monitoring_check_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Each check of a monitoring report gives up after this"
    )
    monitoring_max_list_objects: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Objects counted per prefix by GET /api/monitoring/s3/status (more: truncated)",
    )

    @model_validator(mode="after")
    def _intervals_in_order(self) -> Settings:
        if self.watcher_poll_max_interval_seconds < self.watcher_poll_interval_seconds:
            raise ValueError(
                "watcher_poll_max_interval_seconds must be at least watcher_poll_interval_seconds"
            )
        return self
