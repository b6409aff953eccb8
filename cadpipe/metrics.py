"""Prometheus metrics: what every service shares. Each service defines its own metrics in its own
`metrics.py` on the registry it is handed here.

One registry per running service instance (ServiceMetrics), built in the service's composition
root and served on its own METRICS_PORT, never prometheus_client's global default registry: the
all-in-one stack and the tests run several services, and several replicas of one service, in a
single process, and each instance's /metrics must be what that one pod would show, with
nothing registered twice. So:

* shared concerns keep one name in every service: `grpc_server_handled_total`,
  `grpc_server_handling_seconds` (the names of go-grpc-prometheus, for which dashboards exist),
  `cadpipe_s3_requests_total`, `cadpipe_s3_request_duration_seconds`,
  `cadpipe_dependency_errors_total{dependency="s3"|"mongodb"|"nats"}`;
* a service's own metrics carry its name: `cadpipe_scripts_*`, `cadpipe_watcher_*`,
  `cadpipe_worker_*`, and the gateway's `http_*`;
* Prometheus tells services and pods apart by the scrape target (job, pod labels), as usual.

Dependency errors are counted where the client library sees them, once for all services:
S3 through botocore's event hooks on the client, MongoDB through pymongo's command and
heartbeat listeners (mongomock has none: the in-process stand-in never fails), NATS through the
client's error callback, plus what a service counts itself (a publish JetStream did not
acknowledge).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from pymongo import monitoring as mongo_monitoring

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Request latencies: a millisecond to ten seconds."""

JOB_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Job durations: a tenth of a second to the watcher's default timeout."""

# S3 answers that are part of the protocol, not failures: an absent key, a conditional write
# that lost (versioning counts those itself), not modified.
_S3_EXPECTED = {304, 404, 409, 412}


class ServiceMetrics:
    """One service instance's registry, with the process metrics and the shared instruments."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.dependency_errors = Counter(
            "cadpipe_dependency_errors",
            "Failures talking to S3, MongoDB or NATS, by kind",
            ["dependency", "kind"],
            registry=self.registry,
        )
        self.s3_requests = Counter(
            "cadpipe_s3_requests",
            "S3 API calls by operation and HTTP status ('transport': no answer)",
            ["operation", "status"],
            registry=self.registry,
        )
        self.s3_latency = Histogram(
            "cadpipe_s3_request_duration_seconds",
            "S3 API call latency, retries included",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.up = Gauge(
            "cadpipe_service_info",
            "1 for a running service instance",
            ["service"],
            registry=self.registry,
        )
        self.up.labels(service).set(1)

    def count_error(self, dependency: str, kind: str) -> None:
        self.dependency_errors.labels(dependency, kind).inc()

    # --- S3 ----------------------------------------------------------------------------------

    def instrument_s3(self, client: Any) -> None:
        """Counts and times every call of a boto3 S3 client (the adapter's Bucket and boto3's
        transfer manager alike), and counts failures as S3 dependency errors."""
        events = client.meta.events
        events.register("before-call.s3", self._s3_before)
        events.register("after-call.s3", self._s3_after)
        events.register("after-call-error.s3", self._s3_failed)

    def _s3_before(self, context: dict[str, Any], **_: Any) -> None:
        context["cadpipe_started"] = time.perf_counter()

    def _s3_after(
        self, http_response: Any, context: dict[str, Any], event_name: str, **_: Any
    ) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        status = int(getattr(http_response, "status_code", 0))
        self._s3_done(operation, str(status), context)
        if status >= 500 or (status >= 400 and status not in _S3_EXPECTED):
            self.count_error("s3", str(status))

    def _s3_failed(self, context: dict[str, Any], event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        self._s3_done(operation, "transport", context)
        self.count_error("s3", "transport")

    def _s3_done(self, operation: str, status: str, context: dict[str, Any]) -> None:
        self.s3_requests.labels(operation, status).inc()
        started = context.get("cadpipe_started")
        if started is not None:
            self.s3_latency.labels(operation).observe(time.perf_counter() - started)

    # --- MongoDB -----------------------------------------------------------------------------

    def mongo_listeners(self) -> list[Any]:
        """pymongo event listeners (MongoClient(event_listeners=...)) counting failed commands
        and failed server heartbeats."""
        return [_MongoCommandErrors(self), _MongoHeartbeatErrors(self)]

    # --- NATS --------------------------------------------------------------------------------

    async def nats_error_cb(self, error: Exception) -> None:
        """nats.connect(error_cb=...): counts the error and logs it, as the default one does."""
        self.count_error("nats", _nats_kind(error))
        logger.warning("NATS: %s", error or type(error).__name__)

    # --- exposition --------------------------------------------------------------------------

    @contextlib.contextmanager
    def serving(self, host: str, port: int) -> Iterator[int]:
        """Serves /metrics on host:port in a thread while the block runs (port 0: not at all);
        yields the port."""
        if not port:
            yield 0
            return
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        logger.info("metrics on http://%s:%d/metrics", host, port)
        try:
            yield port
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def _nats_kind(error: Exception) -> str:
    name = type(error).__name__
    if isinstance(error, OSError) or "Connection" in name or "NoServers" in name:
        return "connection"
    if "SlowConsumer" in name:
        return "slow_consumer"
    if "Timeout" in name:
        return "timeout"
    return "other"


class _MongoCommandErrors(mongo_monitoring.CommandListener):
    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def started(self, event: mongo_monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: mongo_monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: mongo_monitoring.CommandFailedEvent) -> None:
        self._metrics.count_error("mongodb", "command")


class _MongoHeartbeatErrors(mongo_monitoring.ServerHeartbeatListener):
    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def started(self, event: mongo_monitoring.ServerHeartbeatStartedEvent) -> None:
        pass

    def succeeded(self, event: mongo_monitoring.ServerHeartbeatSucceededEvent) -> None:
        pass

    def failed(self, event: mongo_monitoring.ServerHeartbeatFailedEvent) -> None:
        self._metrics.count_error("mongodb", "heartbeat")
