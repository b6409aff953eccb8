"""Prometheus metrics of the generator, on the registry of its cadpipe.metrics ServiceMetrics
(served on METRICS_PORT), next to the shared gRPC, MongoDB and NATS metrics.

    cadpipe_generator_generations_total{state}            finished generations (succeeded, failed)
    cadpipe_generator_rounds                              rounds a finished generation took
    cadpipe_generator_provider_calls_total{provider,model,outcome}   ok or error
    cadpipe_generator_provider_latency_seconds{provider,model}
    cadpipe_generator_tokens_total{provider,model,direction}         in, out
    cadpipe_generator_cost_usd_total{provider,model}
    cadpipe_generator_running                             generations this instance runs now
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.generator import domain
from services.generator.domain import Generation, Round
from services.generator.generating import Observer

PROVIDER_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)


class GeneratorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["provider", "model"]
        self.generations = Counter(
            "cadpipe_generator_generations",
            "Finished generations by state",
            ["state"],
            registry=registry,
        )
        self.rounds = Histogram(
            "cadpipe_generator_rounds",
            "Rounds a finished generation took",
            buckets=(1, 2, 3, 4, 5, 10, 20),
            registry=registry,
        )
        self.calls = Counter(
            "cadpipe_generator_provider_calls",
            "Calls to the script writer",
            [*labels, "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "cadpipe_generator_provider_latency_seconds",
            "Time the script writer took",
            labels,
            buckets=PROVIDER_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "cadpipe_generator_tokens",
            "Tokens the provider counted",
            [*labels, "direction"],
            registry=registry,
        )
        self.cost = Counter(
            "cadpipe_generator_cost_usd",
            "Cost the provider reported, USD",
            labels,
            registry=registry,
        )
        self.running = Gauge(
            "cadpipe_generator_running", "Generations this instance runs now", registry=registry
        )

    def watch_running(self, running: Callable[[], int]) -> None:
        self.running.set_function(lambda: float(running()))

    def finished(self, generation: Generation) -> None:
        self.generations.labels(state=generation.state).inc()
        self.rounds.observe(generation.round)

    def provider_call(self, r: Round, ok: bool) -> None:
        provider, model = r.provider or "unknown", r.model or "unknown"
        self.calls.labels(provider, model, "ok" if ok else "error").inc()
        self.latency.labels(provider, model).observe(r.latency_seconds)
        if ok:
            self.tokens.labels(provider, model, "in").inc(r.tokens_in)
            self.tokens.labels(provider, model, "out").inc(r.tokens_out)
            self.cost.labels(provider, model).inc(r.cost_usd)

    def observer(self) -> Observer:
        return Observer(finished=self.finished, provider_call=self.provider_call)


__all__ = ["GeneratorMetrics", "domain"]
