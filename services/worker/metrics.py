"""Prometheus metrics of the worker, on the registry of its cadpipe.metrics ServiceMetrics
(served on METRICS_PORT, next to the shared gRPC, S3 and NATS metrics).

    cadpipe_worker_jobs_total{outcome, reason}      deliveries handled, by what became of them:
        completed, error (reason: the marker's exit_reason: ok, script_error, timeout, ...),
        already_finished (a redelivery of a version with a marker), handed_back (stopped by a
        shutdown, back to the stream), retry (the sandbox failed; redelivered later), held (S3
        failed: the job waits in the worker, its delivery unspent, until S3 answers), expired
        (the watcher ended the version for waiting too long; acked, never run), dropped (an
        event naming no script)
    cadpipe_worker_job_duration_seconds{outcome}   started record to marker, completed and error
    cadpipe_worker_redeliveries_total              deliveries of a version after its first
    cadpipe_worker_jobs_running                    jobs in flight now: running FreeCAD or storing
    cadpipe_worker_jobs_waiting                    jobs fetched and waiting for a slot (at scrape)
    cadpipe_worker_intake_paused                   1 while S3 or NATS is down and no work is taken
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cadpipe.metrics import JOB_BUCKETS


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Counter(
            "cadpipe_worker_jobs",
            "Deliveries handled, by outcome and the marker's exit reason",
            ["outcome", "reason"],
            registry=registry,
        )
        self.duration = Histogram(
            "cadpipe_worker_job_duration_seconds",
            "Seconds from fetching the script to writing the marker",
            ["outcome"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.redeliveries = Counter(
            "cadpipe_worker_redeliveries",
            "Deliveries of a version after its first (a worker died or stopped mid-job)",
            registry=registry,
        )
        self.running = Gauge(
            "cadpipe_worker_jobs_running",
            "Jobs in flight on this worker: running FreeCAD, or storing their results",
            registry=registry,
        )
        self.waiting = Gauge(
            "cadpipe_worker_jobs_waiting",
            "Jobs fetched by this worker and waiting for a slot (owners in turn)",
            registry=registry,
        )
        self.paused = Gauge(
            "cadpipe_worker_intake_paused",
            "1 while S3 or NATS is down and this worker takes no work",
            registry=registry,
        )

    def watch_running(self, running: Callable[[], int]) -> None:
        self.running.set_function(lambda: float(running()))

    def watch_intake(self, waiting: Callable[[], int], taking_work: Callable[[], bool]) -> None:
        self.waiting.set_function(lambda: float(waiting()))
        self.paused.set_function(lambda: 0.0 if taking_work() else 1.0)

    def observe_job(self, outcome: str, reason: str, seconds: float | None, attempt: int) -> None:
        """Intake's observer, told once per delivery."""
        self.jobs.labels(outcome, reason).inc()
        if seconds is not None:
            self.duration.labels(outcome).observe(seconds)
        if attempt > 1:
            self.redeliveries.inc()
