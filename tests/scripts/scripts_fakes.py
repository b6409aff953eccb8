"""Small in-memory stand-ins for the script service's ports, recording what happened."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence

from cadpipe import errors
from services.scripts.domain import Claim, OutboxEntry, VersionRecord

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class FakeStore:
    """A bucket of scripts. `before_put` runs before each conditional put: tests use it to let
    a racing writer in."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, int], tuple[VersionRecord, bytes]] = {}
        self.calls: list[tuple[str, int]] = []
        self.before_put: Callable[[VersionRecord], Awaitable[None]] | None = None
        self.fail_puts_after_writing = 0
        """That many puts store the object and then raise, as a lost response would."""
        self.extra_keys: list[str] = []

    def add(self, record: VersionRecord, body: bytes = b"x = 1\n") -> None:
        self.objects[(record.project, record.version)] = (record, body)

    def versions(self, project: str) -> list[int]:
        return sorted(v for p, v in self.objects if p == project)

    def count(self, operation: str) -> int:
        return sum(1 for name, _ in self.calls if name == operation)

    async def put_if_absent(self, record: VersionRecord, body: bytes) -> bool:
        if self.before_put:
            await self.before_put(record)
        self.calls.append(("put", record.version))
        if (record.project, record.version) in self.objects:
            return False
        self.objects[(record.project, record.version)] = (record, body)
        if self.fail_puts_after_writing:
            self.fail_puts_after_writing -= 1
            raise errors.Unavailable("S3: connection reset after the write")
        return True

    async def exists(self, project: str, version: int) -> bool:
        self.calls.append(("head", version))
        return (project, version) in self.objects

    async def describe(self, project: str, version: int) -> VersionRecord | None:
        self.calls.append(("head", version))
        found = self.objects.get((project, version))
        return found[0] if found else None

    async def read(self, project: str, version: int) -> tuple[VersionRecord, bytes] | None:
        self.calls.append(("get", version))
        return self.objects.get((project, version))

    async def list_keys(
        self, prefix: str, *, start_after: str = "", limit: int = 1000
    ) -> list[str]:
        keys = sorted([r.key for r, _ in self.objects.values()] + self.extra_keys)
        return [k for k in keys if k.startswith(prefix) and k > start_after][:limit]


class FakeIndex:
    def __init__(self) -> None:
        self.latest: dict[str, int] = {}
        self.docs: dict[tuple[str, int], VersionRecord] = {}
        self.failing_writes = 0
        """That many record_version(s) calls fail, as MongoDB down would make them."""
        self.batches: list[int] = []
        """The size of each record_versions call."""

    async def latest_version(self, project: str) -> int:
        return self.latest.get(project, 0)

    async def owner_and_latest(self, project: str) -> tuple[str | None, int]:
        return ("" if project in self.latest else None), self.latest.get(project, 0)

    async def record_version(self, record: VersionRecord) -> None:
        if self.failing_writes:
            self.failing_writes -= 1
            raise errors.Unavailable("MongoDB: connection refused")
        self.docs[(record.project, record.version)] = record
        self.latest[record.project] = max(self.latest.get(record.project, 0), record.version)

    async def record_versions(self, records: Sequence[VersionRecord]) -> None:
        self.batches.append(len(records))
        if self.failing_writes:
            self.failing_writes -= 1
            raise errors.Unavailable("MongoDB: connection refused")
        for record in records:
            self.docs[(record.project, record.version)] = record
            self.latest[record.project] = max(self.latest.get(record.project, 0), record.version)

    async def versions(self, project: str, first: int, last: int) -> dict[int, VersionRecord]:
        return {v: r for (p, v), r in self.docs.items() if p == project and first <= v <= last}

    async def get_version(self, project: str, version: int) -> VersionRecord | None:
        return self.docs.get((project, version))

    async def projects(self) -> list[str]:
        return sorted(self.latest)

    async def reset_project(self, project: str, latest: int) -> None:
        self.docs = {k: r for k, r in self.docs.items() if k[0] != project or k[1] <= latest}
        if latest:
            self.latest[project] = latest
        else:
            self.latest.pop(project, None)


class FakeOutbox:
    def __init__(self) -> None:
        self.entries: dict[str, OutboxEntry] = {}
        self.sent: set[str] = set()

    async def add(self, entry: OutboxEntry) -> None:
        self.entries.setdefault(entry.msg_id, entry)

    async def add_many(self, entries: Sequence[OutboxEntry]) -> None:
        for entry in entries:
            await self.add(entry)

    async def contains(self, msg_ids: Sequence[str]) -> set[str]:
        return {m for m in msg_ids if m in self.entries}

    async def pending(self, limit: int) -> list[OutboxEntry]:
        return [e for m, e in self.entries.items() if m not in self.sent][:limit]

    async def mark_sent(self, msg_ids: Sequence[str]) -> None:
        self.sent.update(msg_ids)

    async def note_failure(self, msg_ids: Sequence[str], error: str) -> None:
        return None


class FakeClaims:
    def __init__(self) -> None:
        self.claims: dict[tuple[str, str], Claim] = {}
        self.released: list[str] = []

    async def claim(self, claim: Claim) -> Claim | None:
        held = self.claims.get((claim.project, claim.key))
        if held is not None:
            return held
        self.claims[(claim.project, claim.key)] = claim
        return None

    async def get(self, project: str, key: str) -> Claim | None:
        return self.claims.get((project, key))

    async def take_over(self, stale: Claim, replacement: Claim) -> bool:
        held = self.claims.get((stale.project, stale.key))
        if held is None or held.owner != stale.owner or held.state != "pending":
            return False
        self.claims[(stale.project, stale.key)] = replacement
        return True

    async def complete(self, project: str, key: str, owner: str, version: int) -> None:
        held = self.claims.get((project, key))
        if held is not None and held.owner == owner:
            self.claims[(project, key)] = dataclasses.replace(held, state="done", version=version)

    async def release(self, project: str, key: str, owner: str) -> None:
        held = self.claims.get((project, key))
        if held is not None and held.owner == owner and held.state == "pending":
            del self.claims[(project, key)]
            self.released.append(owner)

    async def restore(self, project: str, key: str, fingerprint: str, version: int) -> None:
        held = self.claims.get((project, key))
        if held is not None and held.state == "done" and held.version <= version:
            return
        self.claims[(project, key)] = Claim(
            project=project,
            key=key,
            owner="reindex",
            fingerprint=fingerprint,
            created_at=held.created_at if held else EPOCH,
            from_version=version - 1,
            state="done",
            version=version,
        )


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)
