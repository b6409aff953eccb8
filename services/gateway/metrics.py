"""Prometheus metrics of the gateway, on the registry of its cadpipe.metrics ServiceMetrics (served
on METRICS_PORT, a port of its own: the API port is public, the metrics are not).

    http_requests_total{method, route, status}        requests answered
    http_request_duration_seconds{method, route}      time to the end of the response (the
                                                      whole stream for Server-Sent Events)
    http_requests_in_flight                           requests being served

`route` is the template a request matched (`/api/projects/{project}/status`), never the raw
path, so that the number of series stays bounded whatever clients send; `unmatched` for a path
no route fits.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cadpipe.metrics import LATENCY_BUCKETS
from services.gateway.routes import RouteTable, route_of

GATEWAY_ROUTES = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs"})
UNMATCHED = "unmatched"


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "http_requests_in_flight", "HTTP requests being served", registry=registry
        )


class HttpMetricsMiddleware:
    """Outermost but for the request id: it sees every answer, the guard's refusals included."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics, table: RouteTable) -> None:
        self.app = app
        self.metrics = metrics
        self.table = table

    def route_of(self, scope: Scope) -> str:
        path = scope["path"]
        if path in GATEWAY_ROUTES:
            return str(path)
        routed = route_of(self.table, scope)
        return routed.match.route.path.template if routed.match is not None else UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        route = self.route_of(scope)
        status = 500  # what the client gets when the app fails before answering
        started = time.perf_counter()

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_observed)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
