"""Prometheus metrics of the script service, on METRICS_PORT (0: none), path /metrics.

    cadpipe_scripts_rpc_seconds{method, code}   histogram of gRPC calls by outcome
    cadpipe_scripts_events_published_total      uploaded events acknowledged by JetStream
    cadpipe_scripts_outbox_pending              events waiting in the outbox (read at scrape)

Each start() has its own registry, so several services (the all-in-one stack, tests) can live in
one process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    rpc_seconds: Histogram
    events_published: Counter

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        self.rpc_seconds.labels(method=method, code=code).observe(seconds)


def make_metrics(outbox_pending: Callable[[], int]) -> Metrics:
    registry = CollectorRegistry()
    pending = Gauge(
        "cadpipe_scripts_outbox_pending",
        "Uploaded events waiting in the outbox for JetStream",
        registry=registry,
    )
    pending.set_function(lambda: float(outbox_pending()))
    return Metrics(
        registry=registry,
        rpc_seconds=Histogram(
            "cadpipe_scripts_rpc_seconds",
            "gRPC calls of the script service",
            ["method", "code"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        ),
        events_published=Counter(
            "cadpipe_scripts_events_published",
            "Uploaded events acknowledged by JetStream",
            registry=registry,
        ),
    )


def serve(metrics: Metrics, host: str, port: int) -> Callable[[], None]:
    """Starts the /metrics endpoint in a thread; returns the function that stops it."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    logger.info("metrics on port %d", server.server_port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
