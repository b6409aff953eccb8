"""What monitoring answers: check results and reports, and the pure rules that build them
(overall status, percentiles, one row per version), with no I/O."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from services.watcher import domain
from services.watcher.domain import Job
from services.watcher.monitoring.ports import ConsumerState

OK = "ok"
FAILED = "failed"
WARNING = "warning"
DEGRADED = "degraded"
STATES = (*domain.PENDING_STATES, *domain.TERMINAL_STATES)
UNTRACKED = "untracked"
"""A version whose script is in S3 but that has no job: no watcher got its uploaded event."""


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    latency_ms: float = 0.0
    detail: str = ""
    required: bool = True

    @property
    def failed(self) -> bool:
        return self.required and self.status == FAILED


@dataclass(frozen=True)
class HealthReport:
    status: str
    checks: list[Check]
    checked_at: dt.datetime
    served_by: str

    @property
    def healthy(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class PrefixStats:
    prefix: str
    objects: int
    bytes: int
    truncated: bool


@dataclass(frozen=True)
class S3Status:
    bucket: str
    endpoint: str
    reachable: bool
    latency_ms: float
    detail: str
    prefixes: list[PrefixStats]
    max_objects_per_prefix: int


@dataclass(frozen=True)
class ConfigValidation:
    valid: bool
    checks: list[Check]


@dataclass(frozen=True)
class VersionRow:
    version: int
    state: str
    uploaded_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    detected_at: dt.datetime | None = None
    duration_seconds: float = 0.0
    detection_latency_seconds: float = 0.0
    event_published: bool = False
    error: str = ""
    exit_reason: str = ""
    formats: tuple[str, ...] = ()
    started_at: dt.datetime | None = None
    queued_seconds: float = 0.0


@dataclass(frozen=True)
class ProcessingStatus:
    project: str
    versions: list[VersionRow]
    counts: dict[str, int]
    truncated: bool


@dataclass(frozen=True)
class RoundTrip:
    ok: bool
    bucket: str
    key: str
    size_bytes: int
    steps: list[Check]
    total_ms: float
    cleaned_up: bool


@dataclass(frozen=True)
class LatencySummary:
    samples: int = 0
    p50_seconds: float = 0.0
    p95_seconds: float = 0.0
    max_seconds: float = 0.0


@dataclass(frozen=True)
class MetricsSummary:
    since: dt.datetime | None
    uploads: int
    jobs_by_state: dict[str, int]
    pending: int
    unpublished_events: int
    detection_latency: LatencySummary
    job_duration: LatencySummary
    worker_queue: int
    worker_in_flight: int
    completion_events: int
    computed_at: dt.datetime


def overall_status(checks: Iterable[Check]) -> str:
    return DEGRADED if any(c.failed for c in checks) else OK


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (0 < fraction <= 1) of values; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize_latencies(values: Sequence[float]) -> LatencySummary:
    if not values:
        return LatencySummary()
    return LatencySummary(
        samples=len(values),
        p50_seconds=percentile(values, 0.50),
        p95_seconds=percentile(values, 0.95),
        max_seconds=max(values),
    )


def detection_latency(job: Job) -> float | None:
    """From the worker's finish to the decision; None where the worker's finish is not known
    (a timeout) or not recorded."""
    if job.state not in ("completed", "error") or job.finished_at is None:
        return None
    if job.detected_at is None:
        return None
    return max(0.0, (job.detected_at - job.finished_at).total_seconds())


def version_row(job: Job, now: dt.datetime) -> VersionRow:
    duration = job.duration_seconds
    if job.pending:
        duration = max(0.0, (now - job.uploaded_at).total_seconds())
    queued_until = job.started_at or (now if job.state == domain.QUEUED else None)
    queued = (queued_until - job.uploaded_at).total_seconds() if queued_until else 0.0
    return VersionRow(
        version=job.version,
        state=job.state,
        uploaded_at=job.uploaded_at,
        finished_at=job.finished_at,
        detected_at=job.detected_at,
        duration_seconds=duration,
        detection_latency_seconds=detection_latency(job) or 0.0,
        event_published=job.event_published,
        error=job.error,
        exit_reason=job.exit_reason,
        formats=tuple(job.formats),
        started_at=job.started_at,
        queued_seconds=max(0.0, queued),
    )


def processing_rows(
    jobs: Iterable[Job], script_versions: Iterable[int], now: dt.datetime
) -> list[VersionRow]:
    """One row per version, oldest first: the jobs, and an `untracked` row for every script in
    S3 without a job."""
    rows = {job.version: version_row(job, now) for job in jobs}
    for version in script_versions:
        rows.setdefault(version, VersionRow(version=version, state=UNTRACKED))
    return [rows[v] for v in sorted(rows)]


def count_states(rows: Iterable[VersionRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    return counts


def endpoint_check(name: str, url: str | None, *, unset: str) -> Check:
    """An S3 endpoint URL: http or https with a host; plain HTTP beyond this machine is worth
    a warning (credentials and scripts would travel unencrypted)."""
    if not url:
        return Check(name, OK, detail=unset)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Check(name, FAILED, detail=f"{redact_url(url)} is not an http(s) URL with a host")
    local = parts.hostname in ("localhost", "127.0.0.1", "::1") or "." not in parts.hostname
    if parts.scheme == "http" and not local:
        return Check(
            name,
            WARNING,
            detail=f"{redact_url(url)}: plain HTTP, credentials and scripts travel unencrypted",
            required=False,
        )
    return Check(name, OK, detail=redact_url(url))


def redact_url(url: str) -> str:
    """The URL without user information (a password in an endpoint URL is a secret)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=host).geturl()


def redelivery_check(consumer: ConsumerState | None, job_timeout: float, durable: str) -> Check:
    """The watcher times a version out after job_timeout; the workers' consumer may still be
    redelivering it to other workers after that (up to max_deliver deliveries, each after at
    least ack_wait when a worker dies), and their result would come too late."""
    name = f"worker consumer {durable}"
    if consumer is None:
        return Check(
            name, WARNING, detail="not created yet: no worker has connected", required=False
        )
    worst = consumer.max_deliver * consumer.ack_wait_seconds
    if consumer.max_deliver > 0 and worst > job_timeout:
        return Check(
            name,
            WARNING,
            detail=f"{consumer.max_deliver} deliveries x {consumer.ack_wait_seconds:g} s ack wait "
            f"= {worst:g} s can outlast the watcher's {job_timeout:g} s job timeout",
            required=False,
        )
    return Check(
        name,
        OK,
        detail=f"max_deliver {consumer.max_deliver}, ack_wait {consumer.ack_wait_seconds:g} s",
        required=False,
    )


def describe_error(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
