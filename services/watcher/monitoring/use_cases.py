"""The monitoring use cases. Every answer comes from checks run for the request, each bounded
by a timeout, so a hung dependency makes a slow "failed" check, never a hung request."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cadpipe import errors, layout, messaging
from cadpipe.settings import SettingSummary
from services.watcher import domain
from services.watcher.monitoring.ports import (
    CheckWarning,
    ConsumerState,
    JobsView,
    MonitoringConfig,
    S3Probe,
    ServiceHealth,
    StreamsView,
)
from services.watcher.monitoring.reports import (
    FAILED,
    OK,
    STATES,
    WARNING,
    Check,
    ConfigValidation,
    HealthReport,
    MetricsSummary,
    PrefixStats,
    ProcessingStatus,
    RoundTrip,
    S3Status,
    count_states,
    describe_error,
    detection_latency,
    endpoint_check,
    overall_status,
    processing_rows,
    redact_url,
    redelivery_check,
    summarize_latencies,
)

SCRATCH_PREFIX = "_cadpipe-monitoring/s3-upload-test/"
"""Where the S3 round trip writes: outside every prefix of the layout, so that nothing that
reads the bucket contract ever sees the test object."""

DEFAULT_TEST_BYTES = 1024
MAX_TEST_BYTES = 1024 * 1024
MAX_VERSIONS = 1000
"""Versions one processing-status answer holds (the newest)."""
LATENCY_SAMPLE = 1000
"""Decided versions the percentiles are computed over (the most recently decided)."""


Probe = Callable[[], Awaitable[str]]


@dataclass
class Monitoring:
    s3: S3Probe
    jobs: JobsView
    streams: StreamsView
    config: MonitoringConfig
    scripts_health: ServiceHealth | None = None
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))

    async def _check(self, name: str, probe: Probe, *, required: bool = True) -> Check:
        timeout = self.config.check_timeout_seconds
        started = time.perf_counter()
        status, detail = OK, ""
        try:
            detail = await asyncio.wait_for(probe(), timeout)
        except CheckWarning as warning:
            status, detail, required = WARNING, str(warning), False
        except TimeoutError:
            status, detail = FAILED, f"no answer within {timeout:g} s"
        except Exception as error:  # the check's result, reported with its message
            status, detail = FAILED, describe_error(error)
        elapsed = (time.perf_counter() - started) * 1000
        return Check(name, status, round(elapsed, 2), detail, required)

    # --- health ----------------------------------------------------------------------------

    async def health(self) -> HealthReport:
        probes: list[tuple[str, Probe, bool]] = [
            ("s3", self._probe_s3, True),
            ("mongodb", self._probe_mongodb, True),
            ("nats", self._probe_nats, True),
            (
                f"stream {messaging.SCRIPTS_STREAM}",
                self._probe_stream(messaging.SCRIPTS_STREAM),
                True,
            ),
            (f"stream {messaging.JOBS_STREAM}", self._probe_stream(messaging.JOBS_STREAM), True),
            (
                f"watcher consumer {self.config.watcher_consumer}",
                self._probe_watcher_consumer,
                True,
            ),
            (f"workers ({self.config.worker_consumer})", self._probe_workers, False),
        ]
        if self.scripts_health is not None:
            probes.append(("script service", self._probe_scripts, True))
        checks = list(await asyncio.gather(*(self._check(n, p, required=r) for n, p, r in probes)))
        return HealthReport(overall_status(checks), checks, self.clock(), self.config.served_by)

    async def _probe_s3(self) -> str:
        await self.s3.ping()
        return f"bucket {self.config.bucket} reachable"

    async def _probe_mongodb(self) -> str:
        await self.jobs.ping()
        return "ping answered"

    async def _probe_nats(self) -> str:
        await self.streams.ping()
        return "connected, round trip answered"

    def _probe_stream(self, name: str) -> Probe:
        async def probe() -> str:
            found = await self.streams.stream(name)
            if found is None:
                raise LookupError(f"stream {name} does not exist")
            return f"{found.messages} messages"

        return probe

    async def _probe_watcher_consumer(self) -> str:
        found = await self.streams.consumer(messaging.SCRIPTS_STREAM, self.config.watcher_consumer)
        if found is None:
            raise LookupError(f"consumer {self.config.watcher_consumer} does not exist")
        return f"{found.pending} uploaded events not yet read, {found.ack_pending} being stored"

    async def _probe_workers(self) -> str:
        found = await self.streams.consumer(messaging.SCRIPTS_STREAM, self.config.worker_consumer)
        if found is None:
            raise CheckWarning("no worker has connected yet (its consumer does not exist)")
        detail = (
            f"{found.pending} versions waiting for a worker, {found.ack_pending} running, "
            f"{found.waiting} fetch requests open"
        )
        if found.pending and not found.ack_pending and not found.waiting:
            raise CheckWarning(f"{detail}: versions wait and no worker is fetching")
        return detail

    async def _probe_scripts(self) -> str:
        assert self.scripts_health is not None
        status = await self.scripts_health()
        if status != "SERVING":
            raise ConnectionError(f"{self.config.scripts_addr} answers {status}")
        return f"{self.config.scripts_addr} SERVING"

    # --- S3 --------------------------------------------------------------------------------

    async def s3_status(self) -> S3Status:
        reach = await self._check("s3", self._probe_s3)
        limit = self.config.max_list_objects
        prefixes: list[PrefixStats] = []
        if reach.status == OK:
            timeout = max(self.config.check_timeout_seconds, 10.0)  # listings take longer

            async def count(prefix: str) -> PrefixStats:
                objects, size, truncated = await asyncio.wait_for(
                    self.s3.count(prefix, limit), timeout
                )
                return PrefixStats(prefix, objects, size, truncated)

            try:
                prefixes = list(await asyncio.gather(*(count(p) for p in layout.PREFIXES)))
            except Exception as error:  # reachable, but the listing failed: say so
                reach = Check("s3", FAILED, reach.latency_ms, f"listing: {describe_error(error)}")
        return S3Status(
            bucket=self.config.bucket,
            endpoint=redact_url(self.config.s3_endpoint or ""),
            reachable=reach.status == OK,
            latency_ms=reach.latency_ms,
            detail=reach.detail,
            prefixes=prefixes,
            max_objects_per_prefix=limit,
        )

    # --- configuration ---------------------------------------------------------------------

    async def validate_config(self) -> ConfigValidation:
        config = self.config
        worker: list[ConsumerState | None] = []

        async def worker_consumer() -> str:
            worker.append(
                await self.streams.consumer(messaging.SCRIPTS_STREAM, config.worker_consumer)
            )
            return ""

        probed = await asyncio.gather(
            self._check("s3 bucket", self._probe_s3),
            self._check("mongodb jobs indexes", self._probe_indexes),
            self._check(
                f"stream {messaging.SCRIPTS_STREAM}",
                self._probe_stream_config(messaging.SCRIPTS_STREAM, messaging.UPLOADED_SUBJECTS),
            ),
            self._check(
                f"stream {messaging.JOBS_STREAM}",
                self._probe_stream_config(messaging.JOBS_STREAM, messaging.JOB_SUBJECTS),
            ),
            self._check(
                f"watcher consumer {config.watcher_consumer}", self._probe_watcher_consumer
            ),
            self._check("worker consumer", worker_consumer, required=False),
        )
        checks = list(probed[:-1])
        if probed[-1].status == OK:
            checks.append(
                redelivery_check(worker[0], config.job_timeout_seconds, config.worker_consumer)
            )
        else:
            checks.append(probed[-1])
        checks.append(
            endpoint_check("s3 endpoint", config.s3_endpoint, unset="AWS S3 (no endpoint set)")
        )
        if config.s3_presign_endpoint:
            checks.append(
                endpoint_check("s3 presign endpoint", config.s3_presign_endpoint, unset="")
            )
        if config.scripts_addr:
            checks.append(Check("scripts_addr", OK, detail=config.scripts_addr, required=False))
        else:
            checks.append(
                Check(
                    "scripts_addr",
                    WARNING,
                    detail="not set: the health report leaves the script service out",
                    required=False,
                )
            )
        return ConfigValidation(valid=not any(c.failed for c in checks), checks=checks)

    async def _probe_indexes(self) -> str:
        names = await self.jobs.index_names()
        if "project_version" not in names:
            raise LookupError(
                "the jobs collection lacks its unique (project, version) index, which the "
                "watcher creates at start"
            )
        return f"{len(names)} indexes"

    def _probe_stream_config(self, name: str, subjects: str) -> Probe:
        async def probe() -> str:
            found = await self.streams.stream(name)
            if found is None:
                raise LookupError("does not exist (every service creates it at start)")
            if subjects not in found.subjects:
                raise ValueError(f"subjects {list(found.subjects)}, expected [{subjects!r}]")
            if found.duplicate_window_seconds < messaging.DUPLICATE_WINDOW_SECONDS:
                raise ValueError(
                    f"duplicate window {found.duplicate_window_seconds:g} s, expected "
                    f"{messaging.DUPLICATE_WINDOW_SECONDS} s (repeated events would be stored)"
                )
            return f"subjects {list(found.subjects)}, {found.messages} messages"

        return probe

    def config_summary(self) -> tuple[str, str, tuple[SettingSummary, ...]]:
        return "watcher", self.config.served_by, self.config.settings

    # --- processing status -----------------------------------------------------------------

    async def processing_status(self, project: str) -> ProcessingStatus:
        domain.check_project(project)
        (jobs, more), (versions, _) = await asyncio.gather(
            self.jobs.for_project(project, MAX_VERSIONS),
            self.s3.script_versions(project, MAX_VERSIONS),
        )
        if not jobs and not versions:
            raise errors.NotFound(f"project {project!r} has no versions")
        if more and jobs:
            # the newest MAX_VERSIONS jobs: older scripts are beyond this answer, not untracked
            oldest = min(j.version for j in jobs)
            versions = {v for v in versions if v >= oldest}
        rows = processing_rows(jobs, versions, self.clock())
        truncated = more or len(rows) > MAX_VERSIONS
        rows = rows[-MAX_VERSIONS:]
        return ProcessingStatus(project, rows, count_states(rows), truncated)

    # --- S3 round trip ---------------------------------------------------------------------

    async def s3_round_trip(self, size_bytes: int) -> RoundTrip:
        if size_bytes < 0 or size_bytes > MAX_TEST_BYTES:
            raise errors.InvalidArgument(
                f"size_bytes must be between 0 and {MAX_TEST_BYTES} (0: {DEFAULT_TEST_BYTES})"
            )
        size = size_bytes or DEFAULT_TEST_BYTES
        body = os.urandom(size)
        digest = hashlib.sha256(body).hexdigest()
        owner = "".join(c if c.isalnum() or c in "-_" else "-" for c in self.config.served_by)
        key = f"{SCRATCH_PREFIX}{owner or 'watcher'}-{uuid.uuid4().hex}.bin"
        started = time.perf_counter()
        steps: list[Check] = []
        written = False

        async def put() -> str:
            nonlocal written
            if not await self.s3.put_if_absent(key, body):
                raise FileExistsError(f"{key} already exists")
            written = True
            return f"{size} bytes written with If-None-Match: *"

        async def conditional() -> str:
            if await self.s3.put_if_absent(key, b"second"):
                raise AssertionError(
                    "a second conditional put of the same key was accepted: this store ignores "
                    "If-None-Match, and two uploads could get the same version"
                )
            return "a second conditional put was refused (412), as versioning needs"

        async def head() -> str:
            found = await self.s3.head(key)
            if found != size:
                raise AssertionError(f"head reports {found} bytes, {size} were written")
            return f"{found} bytes"

        async def get() -> str:
            read = await self.s3.get(key)
            if read is None:
                raise FileNotFoundError(f"{key} is not there")
            if hashlib.sha256(read).hexdigest() != digest:
                raise AssertionError(f"read {len(read)} bytes that differ from those written")
            return f"sha256 {digest[:16]}... matches"

        async def delete() -> str:
            await self.s3.delete(key)
            return "deleted"

        async def gone() -> str:
            if await self.s3.head(key) is not None:
                raise AssertionError(f"{key} is still there after its deletion")
            return "head finds nothing"

        plan = [
            ("put", put),
            ("conditional put refused", conditional),
            ("head", head),
            ("get and compare", get),
            ("delete", delete),
            ("gone", gone),
        ]
        for name, step in plan:
            result = await self._check(name, step)
            steps.append(result)
            if result.status != OK:
                break
        cleaned = all(s.status == OK for s in steps) and len(steps) == len(plan)
        if not cleaned and written:
            # whatever failed, the test object does not stay behind
            cleanup = await self._check("cleanup", delete)
            steps.append(cleanup)
            cleaned = cleanup.status == OK
        elif not written:
            cleaned = True
        ok = all(s.status == OK for s in steps) and len(steps) == len(plan)
        total = (time.perf_counter() - started) * 1000
        return RoundTrip(ok, self.config.bucket, key, size, steps, round(total, 2), cleaned)

    # --- metrics summary -------------------------------------------------------------------

    async def metrics_summary(self, window_seconds: int) -> MetricsSummary:
        if window_seconds < 0:
            raise errors.InvalidArgument("window_seconds must be 0 (all time) or more")
        now = self.clock()
        since = now - dt.timedelta(seconds=window_seconds) if window_seconds else None
        counts, unpublished, recent = await asyncio.gather(
            self.jobs.counts(since),
            self.jobs.unpublished(since),
            self.jobs.recent_decided(since, LATENCY_SAMPLE),
        )
        latencies = [v for v in (detection_latency(j) for j in recent) if v is not None]
        durations = [j.duration_seconds for j in recent if j.state in ("completed", "error")]
        queue = in_flight = events = -1  # unknown while NATS does not answer
        try:
            worker, jobs_stream = await asyncio.wait_for(
                asyncio.gather(
                    self.streams.consumer(messaging.SCRIPTS_STREAM, self.config.worker_consumer),
                    self.streams.stream(messaging.JOBS_STREAM),
                ),
                self.config.check_timeout_seconds,
            )
        except Exception:  # reported as unknown (-1); /health says why
            worker, jobs_stream = None, None
        else:
            queue = worker.pending if worker else 0
            in_flight = worker.ack_pending if worker else 0
            events = jobs_stream.messages if jobs_stream else 0
        return MetricsSummary(
            since=since,
            uploads=sum(counts.values()),
            jobs_by_state={state: counts.get(state, 0) for state in STATES},
            pending=sum(counts.get(state, 0) for state in domain.PENDING_STATES),
            unpublished_events=unpublished,
            detection_latency=summarize_latencies(latencies),
            job_duration=summarize_latencies(durations),
            worker_queue=queue,
            worker_in_flight=in_flight,
            completion_events=events,
            computed_at=now,
        )
