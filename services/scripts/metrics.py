"""Prometheus metrics of the script service, on the registry of its cadpipe.metrics
ServiceMetrics (served on METRICS_PORT, 0: none, path /metrics, next to the shared gRPC, S3,
MongoDB and NATS metrics). Uploads by outcome are the interceptor's
grpc_server_handled_total{grpc_method="UploadScript", grpc_code}.

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
    version_conflicts: Counter
    events_published: Counter
    outbox_pending: Gauge

    def watch_outbox(self, pending: Callable[[], int]) -> None:
        """The outbox backlog is counted when Prometheus scrapes (in the metrics thread)."""
        self.outbox_pending.set_function(lambda: float(pending()))


def make_metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(
        registry=registry,
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
