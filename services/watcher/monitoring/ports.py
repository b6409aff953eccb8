"""The small ports the monitoring use cases reach the outside through: adapters.py implements
them over the watcher's own clients, the unit tests with fakes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from cadpipe.settings import SettingSummary
from services.watcher.domain import Job


class CheckWarning(Exception):
    """Raised by a probe for something worth a look that does not make the whole degraded."""


@dataclass(frozen=True)
class StoredObject:
    size: int
    sha256: str


class S3Probe(Protocol):
    async def ping(self) -> None: ...

    async def count(self, prefix: str, limit: int) -> tuple[int, int, bool]:
        """(objects, bytes, truncated) under prefix, listing at most limit objects."""
        ...

    async def script_versions(self, project: str, limit: int) -> tuple[set[int], bool]: ...

    async def put_if_absent(self, key: str, body: bytes) -> bool: ...

    async def head(self, key: str) -> int | None:
        """The object's size, None when absent."""
        ...

    async def get(self, key: str) -> bytes | None: ...

    async def delete(self, key: str) -> None: ...


class JobsView(Protocol):
    async def ping(self) -> None: ...

    async def for_project(self, project: str, limit: int) -> tuple[list[Job], bool]:
        """The project's newest jobs (at most limit), and whether there are more."""
        ...

    async def counts(self, since: dt.datetime | None) -> dict[str, int]:
        """Jobs per state, of versions uploaded since (None: all)."""
        ...

    async def unpublished(self, since: dt.datetime | None) -> int: ...

    async def recent_decided(self, since: dt.datetime | None, limit: int) -> list[Job]: ...

    async def index_names(self) -> list[str]: ...


@dataclass(frozen=True)
class StreamState:
    subjects: tuple[str, ...]
    messages: int
    duplicate_window_seconds: float


@dataclass(frozen=True)
class ConsumerState:
    pending: int
    """Messages no subscriber has taken yet."""
    ack_pending: int
    """Taken, not yet acknowledged (running jobs)."""
    waiting: int
    """Open pull requests (subscribers asking for work)."""
    ack_wait_seconds: float
    max_deliver: int


class StreamsView(Protocol):
    async def ping(self) -> None: ...

    async def stream(self, name: str) -> StreamState | None: ...

    async def consumer(self, stream: str, durable: str) -> ConsumerState | None: ...


ServiceHealth = Callable[[], Awaitable[str]]
"""A grpc.health.v1 Check of another service: its status name (SERVING, ...)."""


@dataclass(frozen=True)
class MonitoringConfig:
    bucket: str
    s3_endpoint: str | None
    s3_presign_endpoint: str | None
    watcher_consumer: str
    worker_consumer: str
    job_timeout_seconds: float
    check_timeout_seconds: float = 2.0
    max_list_objects: int = 10_000
    scripts_addr: str = ""
    served_by: str = ""
    settings: tuple[SettingSummary, ...] = ()
