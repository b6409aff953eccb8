"""Prometheus metrics of the watcher, on the registry of its cadpipe.metrics ServiceMetrics
(served on METRICS_PORT, next to the shared gRPC, S3, MongoDB and NATS metrics).

    cadpipe_watcher_pending                        versions this replica is checking (at scrape)
    cadpipe_watcher_watch_streams                  open WatchStatus streams (at scrape)
    cadpipe_watcher_checks_total                   checks of pending versions in S3
    cadpipe_watcher_check_failures_total           checks that failed (S3 or MongoDB down)
    cadpipe_watcher_decisions_total{outcome}       versions this replica decided
    cadpipe_watcher_lost_races_total               decisions another replica made first
    cadpipe_watcher_events_published_total{kind}   completion events JetStream acknowledged
                                                   (kind: first, sweep)
    cadpipe_watcher_publish_failures_total         publications not acknowledged (the sweep
                                                   retries them)
    cadpipe_watcher_takeovers_total                pending versions taken over from another
                                                   replica (a lapsed or released lease)
    cadpipe_watcher_detection_seconds              worker's finish (marker time) to decision
    cadpipe_watcher_job_duration_seconds{outcome}  upload to finish, as the user waited
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cadpipe.metrics import JOB_BUCKETS, LATENCY_BUCKETS
from services.watcher.domain import Job
from services.watcher.watching import Counters


class _WatcherCollector(Collector):
    """Reads the watcher's own counters at scrape time, so the service layer stays free of
    Prometheus."""

    def __init__(
        self,
        counters: Counters,
        pending: Callable[[], int],
        streams: Callable[[], int],
    ) -> None:
        self._counters = counters
        self._pending = pending
        self._streams = streams

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        c = self._counters
        yield GaugeMetricFamily(
            "cadpipe_watcher_pending", "Versions this replica is checking", value=self._pending()
        )
        yield GaugeMetricFamily(
            "cadpipe_watcher_watch_streams", "Open WatchStatus streams", value=self._streams()
        )
        for name, text, value in (
            ("checks", "Checks of pending versions in S3", c.checks),
            ("check_failures", "Checks that failed (S3 or MongoDB down)", c.check_failures),
            ("lost_races", "Decisions another replica made first", c.lost_races),
            (
                "publish_failures",
                "Completion events JetStream did not acknowledge",
                c.publish_failures,
            ),
            ("takeovers", "Pending versions taken over from another replica", c.claimed),
        ):
            yield CounterMetricFamily(f"cadpipe_watcher_{name}", text, value=value)
        published = CounterMetricFamily(
            "cadpipe_watcher_events_published",
            "Completion events JetStream acknowledged (first publication, or by the sweep)",
            labels=["kind"],
        )
        published.add_metric(["first"], c.published)
        published.add_metric(["sweep"], c.republished)
        yield published


class WatcherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self.decisions = Counter(
            "cadpipe_watcher_decisions",
            "Versions this replica decided, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.detection = Histogram(
            "cadpipe_watcher_detection_seconds",
            "Seconds from the worker's finish (the marker's time) to the watcher's decision",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "cadpipe_watcher_job_duration_seconds",
            "Seconds from the upload to the worker's finish (to the decision for a timeout)",
            ["outcome"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )

    def watch(
        self, counters: Counters, pending: Callable[[], int], streams: Callable[[], int]
    ) -> None:
        self._registry.register(_WatcherCollector(counters, pending, streams))

    def observe_decision(self, job: Job) -> None:
        self.decisions.labels(job.state).inc()
        self.duration.labels(job.state).observe(job.duration_seconds)
        if job.state != "timeout" and job.finished_at and job.detected_at:
            self.detection.observe(max(0.0, (job.detected_at - job.finished_at).total_seconds()))
