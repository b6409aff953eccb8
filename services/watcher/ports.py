"""What the watcher needs from the outside, as small async interfaces. The adapters (MongoDB jobs,
S3 results, NATS events) implement them; the unit tests use in-memory fakes."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from cadpipe.marker import Marker, MarkerOutput
from cadpipe.started import StartedRecord
from cadpipe.v1 import events_pb2
from services.watcher.domain import Found, Job, LogObject, Look


class JobRepository(Protocol):
    """The jobs collection: one document per project and version."""

    async def add(self, job: Job, *, owner: str, lease_until: dt.datetime) -> tuple[Job, str]:
        """Stores a new queued job unless one exists; returns the stored job and its owner."""
        ...

    async def start(self, job: Job) -> bool:
        """Compare-and-set queued -> processing (with started_at). True when it matched."""
        ...

    async def finish(self, job: Job) -> bool:
        """Compare-and-set queued | processing -> job.state (event unpublished). True for the
        one caller whose update matched."""
        ...

    async def mark_published(self, project: str, version: int) -> None: ...

    async def unpublished(self, *, decided_before: dt.datetime, limit: int) -> list[Job]:
        """Decided jobs whose completion event is not known to be published."""
        ...

    async def renew_leases(self, owner: str, *, until: dt.datetime) -> int: ...

    async def claim_lapsed(
        self, owner: str, *, now: dt.datetime, until: dt.datetime, limit: int
    ) -> list[Job]:
        """Takes over pending (queued or processing) jobs whose lease lapsed (and the owner's
        own, after a restart with a stable owner name); returns the jobs it now holds."""
        ...

    async def release(self, owner: str) -> int:
        """Lets other replicas take the owner's pending jobs at once (orderly shutdown)."""
        ...

    async def get(self, project: str, version: int) -> Job | None: ...

    async def latest(self, project: str, *, state: str | None = None) -> Job | None: ...


class ResultReader(Protocol):
    """What the workers left in S3."""

    async def look(self, project: str, version: int, look: Look) -> Found:
        """One check of a pending version: what `look` asks for (its started record, its
        marker, its logs), and what a marker found leaves out (its outputs, its logs)."""
        ...

    async def expire(self, project: str, version: int, record: StartedRecord) -> bool:
        """Writes the queue expiry as the version's started record, unless one exists
        (If-None-Match: *). True when it was written: no worker will run the version."""
        ...

    async def read_text(self, key: str) -> str | None: ...

    async def marker(self, project: str, version: int) -> Marker | None: ...

    async def list_outputs(self, project: str, version: int) -> tuple[MarkerOutput, ...]: ...

    async def list_logs(self, project: str, version: int | None) -> list[LogObject]: ...

    async def read_log(self, project: str, key: str) -> tuple[LogObject, bytes] | None: ...

    async def presign(self, key: str, *, expires_in: int, filename: str) -> str: ...


class EventPublisher(Protocol):
    async def publish_finished(self, event: events_pb2.JobFinished) -> None:
        """Publishes on JetStream with the version's Nats-Msg-Id; raises when not acknowledged."""
        ...
