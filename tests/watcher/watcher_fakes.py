"""Small in-memory stand-ins for the watcher's ports, recording what happened."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

from cadpipe.marker import Marker, MarkerOutput
from cadpipe.started import StartedRecord
from cadpipe.v1 import events_pb2
from services.watcher.domain import (
    PENDING_STATES,
    QUEUED,
    Found,
    Job,
    LogObject,
    Look,
    PollPolicy,
)

START = dt.datetime(2026, 11, 24, 10, 0, 0, tzinfo=dt.UTC)

LIGHT_POLL = PollPolicy(
    interval=0.1, max_interval=2.0, backoff_ratio=0.1, queued_interval=0.5, full_interval=1.0
)
"""The services' default cadences: light checks between full looks, no read budget."""


class FakeClock:
    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@dataclass
class _Row:
    job: Job
    owner: str = ""
    lease_until: dt.datetime | None = None


class FakeJobs:
    """The jobs collection with the same compare-and-set rules as MongoJobs."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], _Row] = {}
        self.failing = False

    def _check(self) -> None:
        if self.failing:
            raise ConnectionError("MongoDB is down")

    async def add(self, job: Job, *, owner: str, lease_until: dt.datetime) -> tuple[Job, str]:
        self._check()
        row = self.rows.setdefault((job.project, job.version), _Row(job, owner, lease_until))
        return row.job, row.owner

    async def start(self, job: Job) -> bool:
        self._check()
        row = self.rows.get((job.project, job.version))
        if row is None or row.job.state != QUEUED:
            return False
        row.job = job
        return True

    async def finish(self, job: Job) -> bool:
        self._check()
        row = self.rows.get((job.project, job.version))
        if row is None or row.job.state not in PENDING_STATES:
            return False
        self.rows[(job.project, job.version)] = _Row(replace(job, event_published=False))
        return True

    async def mark_published(self, project: str, version: int) -> None:
        self._check()
        row = self.rows[(project, version)]
        row.job = replace(row.job, event_published=True)

    async def unpublished(self, *, decided_before: dt.datetime, limit: int) -> list[Job]:
        self._check()
        return [
            r.job
            for r in self.rows.values()
            if r.job.terminal
            and not r.job.event_published
            and r.job.detected_at is not None
            and r.job.detected_at < decided_before
        ][:limit]

    async def renew_leases(self, owner: str, *, until: dt.datetime) -> int:
        self._check()
        mine = [r for r in self.rows.values() if r.owner == owner and not r.job.terminal]
        for row in mine:
            row.lease_until = until
        return len(mine)

    async def claim_lapsed(
        self, owner: str, *, now: dt.datetime, until: dt.datetime, limit: int
    ) -> list[Job]:
        self._check()
        claimed = []
        for row in self.rows.values():
            lapsed = row.lease_until is None or row.lease_until < now
            if not row.job.terminal and (lapsed or row.owner == owner):
                row.owner, row.lease_until = owner, until
                claimed.append(row.job)
        return claimed[:limit]

    async def release(self, owner: str) -> int:
        mine = [r for r in self.rows.values() if r.owner == owner and not r.job.terminal]
        for row in mine:
            row.lease_until = None
        return len(mine)

    async def get(self, project: str, version: int) -> Job | None:
        row = self.rows.get((project, version))
        return row.job if row else None

    async def latest(self, project: str, *, state: str | None = None) -> Job | None:
        jobs = [
            r.job
            for (p, _), r in sorted(self.rows.items())
            if p == project and (state is None or r.job.state == state)
        ]
        return jobs[-1] if jobs else None


class FakeResults:
    """What S3 holds per version, set by the test."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, int], Found] = {}
        self.started: dict[tuple[str, int], StartedRecord] = {}
        """Started records (written once: a worker's start or the watcher's expiry)."""
        self.texts: dict[str, str] = {}
        self.looks: list[tuple[str, int]] = []
        self.plans: list[Look] = []
        """What each look asked for (domain.Look), in order."""
        self.started_after_next_look: dict[tuple[str, int], StartedRecord] = {}
        """A worker's start that lands just after the watcher's next look (a race)."""

    async def look(self, project: str, version: int, look: Look) -> Found:
        self.looks.append((project, version))
        self.plans.append(look)
        found = self.found.get((project, version), Found())
        if not look.marker:
            found = replace(found, marker=None, outputs=())
        if found.marker is None and not look.logs:
            found = replace(found, logs=(), logs_read=False)
        if look.started and found.marker is None:
            found = replace(found, started=self.started.get((project, version)))
        racing = self.started_after_next_look.pop((project, version), None)
        if racing is not None:
            self.started.setdefault((project, version), racing)
        return found

    async def expire(self, project: str, version: int, record: StartedRecord) -> bool:
        if (project, version) in self.started:
            return False
        self.started[(project, version)] = record
        return True

    async def read_text(self, key: str) -> str | None:
        return self.texts.get(key)

    async def marker(self, project: str, version: int) -> Marker | None:
        return self.found.get((project, version), Found()).marker

    async def list_outputs(self, project: str, version: int) -> tuple[MarkerOutput, ...]:
        return self.found.get((project, version), Found()).outputs

    async def list_logs(self, project: str, version: int | None) -> list[LogObject]:
        return [
            g
            for (p, v), f in self.found.items()
            if p == project and version in (None, v)
            for g in f.logs
        ]

    async def read_log(self, project: str, key: str) -> tuple[LogObject, bytes] | None:
        return None

    async def presign(self, key: str, *, expires_in: int, filename: str) -> str:
        return f"https://s3.example/{key}?expires={expires_in}"


@dataclass
class FakeEvents:
    published: list[events_pb2.JobFinished] = field(default_factory=list)
    fail_next: int = 0

    async def publish_finished(self, event: events_pb2.JobFinished) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise TimeoutError("NATS did not acknowledge")
        self.published.append(event)
