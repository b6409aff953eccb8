"""Prometheus metrics of the script service, on the registry of its cadpipe.metrics
ServiceMetrics (served on METRICS_PORT, 0: none, path /metrics, next to the shared gRPC, S3,
MongoDB and NATS metrics).

    cadpipe_scripts_uploads_total{outcome}      UploadScript calls by status code (OK, ...)
    cadpipe_scripts_version_conflicts_total     conditional puts refused: another upload held
                                                the version; each is retried at the next free one
    cadpipe_scripts_events_published_total      uploaded events acknowledged by JetStream
    cadpipe_scripts_outbox_pending              events waiting in the outbox (read at scrape;
                                                -1 while MongoDB does not answer)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    uploads: Counter
    version_conflicts: Counter
    events_published: Counter
    outbox_pending: Gauge

    def watch_outbox(self, pending: Callable[[], int]) -> None:
        """The outbox backlog is counted when Prometheus scrapes (in the metrics thread)."""
        self.outbox_pending.set_function(lambda: float(pending()))

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        """The servicer's observer: latency by method and code is the interceptor's
        (grpc_server_handling_seconds); uploads are counted here by outcome."""
        if method == "UploadScript":
            self.uploads.labels(outcome=code).inc()


def make_metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(
        registry=registry,
        uploads=Counter(
            "cadpipe_scripts_uploads",
            "UploadScript calls by outcome (gRPC status code name)",
            ["outcome"],
            registry=registry,
        ),
        version_conflicts=Counter(
            "cadpipe_scripts_version_conflicts",
            "Conditional puts S3 refused because another upload held the version (each is "
            "retried at the next free version)",
            registry=registry,
        ),
        events_published=Counter(
            "cadpipe_scripts_events_published",
            "Uploaded events acknowledged by JetStream",
            registry=registry,
        ),
        outbox_pending=Gauge(
            "cadpipe_scripts_outbox_pending",
            "Uploaded events waiting in the outbox for JetStream",
            registry=registry,
        ),
    )
