"""Reading a Prometheus registry in-process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry


def sample_value(
    registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None
) -> float:
    """The current value of one sample (0 when absent)."""
    value = registry.get_sample_value(name, labels or {})
    return float(value) if value is not None else 0.0
