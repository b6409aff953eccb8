"""Helpers of the observability tests: scraping a /metrics endpoint over HTTP, waiting on
conditions with deadlines, collecting log records with their context fields."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cadpipe.adapters import s3
from cadpipe.devstack import NatsServer
from cadpipe.logs import ContextFilter
from cadpipe.settings import S3Settings
from services.allinone import stack

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

STL_SCRIPT = """\
import os
with open(os.path.join(os.environ["FREECAD_OUTPUT"], "tiny.stl"), "w") as f:
    f.write("solid t\\nfacet normal 0 0 1\\nouter loop\\nvertex 0 0 0\\nvertex 1 0 0\\n"
            "vertex 0 1 0\\nendloop\\nendfacet\\nendsolid t\\n")
"""
"""A script that finishes in milliseconds with one output (no FreeCAD import)."""


async def scrape(port: int) -> Samples:
    """Every sample of http://127.0.0.1:port/metrics, by name and labels."""
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


class Records(logging.Handler):
    """Log records as the JSON formatter would see them: with the log context's fields."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(ContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def with_field(self, name: str, value: Any) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, name, None) == value]


@dataclass
class Observed:
    stack: stack.Stack
    nats: NatsServer
    bucket: s3.Bucket
    s3_settings: S3Settings
    mongodb_uri: str
    metrics: dict[str, int]
    """Metrics port per service: gateway, scripts, watcher, worker."""
    admin_token: str

    def api(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.stack.api_url, headers=headers, timeout=30)

    def admin(self) -> httpx.AsyncClient:
        return self.api(self.admin_token)

    def user(self) -> httpx.AsyncClient:
        return self.api(self.stack.user_token)
