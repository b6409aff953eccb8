"""The small interfaces the use cases drive. Adapters: s3_store.py (S3), mongo_index.py (MongoDB);
unit tests use hand-written fakes (tests/scripts/scripts_fakes.py).

Every method is async: the adapters run the blocking boto3 and pymongo calls in a thread.
Store failures surface as cadpipe.errors.Unavailable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.scripts.domain import (
    Claim,
    OutboxEntry,
    ProjectCursor,
    ProjectSummary,
    VersionRecord,
)


class ScriptStore(Protocol):
    """The bucket: the truth about which versions exist."""

    async def put_if_absent(self, record: VersionRecord, body: bytes) -> bool:
        """Writes the script at record.key unless an object holds it (If-None-Match: *).
        False when one already does; nothing is then changed."""
        ...

    async def exists(self, project: str, version: int) -> bool: ...

    async def describe(self, project: str, version: int) -> VersionRecord | None:
        """The version as S3 records it (HEAD, and GET for scripts without our metadata)."""
        ...

    async def read(self, project: str, version: int) -> tuple[VersionRecord, bytes] | None: ...

    async def list_keys(
        self, prefix: str, *, start_after: str = "", limit: int = 1000
    ) -> list[str]:
        """One page of keys under prefix, in S3's (lexicographic) order."""
        ...


class ProjectIndex(Protocol):
    """MongoDB's `projects` and `versions`: a rebuildable index of the bucket."""

    async def latest_version(self, project: str) -> int:
        """The highest version known to the index, 0 if none. May lag behind S3."""
        ...

    async def owner_and_latest(self, project: str) -> tuple[str | None, int]:
        """One read of the project's document: its owner as cadpipe.ownership records it
        (None: no document; "": none recorded) and latest_version."""
        ...

    async def record_version(self, record: VersionRecord) -> None:
        """Upserts the version document and raises the project's latest to it (never lowers)."""
        ...

    async def record_versions(self, records: Sequence[VersionRecord]) -> None:
        """record_version of each, in as few requests as the store allows."""
        ...

    async def versions(self, project: str, first: int, last: int) -> dict[int, VersionRecord]:
        """The indexed versions first..last of a project (some may be missing)."""
        ...

    async def get_version(self, project: str, version: int) -> VersionRecord | None: ...

    async def projects(self) -> list[str]: ...

    async def list_projects(
        self, owner: str | None, after: ProjectCursor | None, limit: int
    ) -> list[ProjectSummary]:
        """Projects by newest activity (updated_at descending, then name), after the cursor;
        only `owner`'s unless owner is None (every project)."""
        ...

    async def reset_project(self, project: str, latest: int) -> None:
        """Sets latest exactly and drops version documents above it (reindex only)."""
        ...


class Outbox(Protocol):
    """MongoDB's `outbox`: events recorded before the upload returns, published later."""

    async def add(self, entry: OutboxEntry) -> None:
        """Records the entry as pending; a second add of the same msg_id changes nothing."""
        ...

    async def add_many(self, entries: Sequence[OutboxEntry]) -> None:
        """add of each, in as few requests as the store allows."""
        ...

    async def contains(self, msg_ids: Sequence[str]) -> set[str]:
        """Which of these message ids have an entry, pending or sent."""
        ...


class OutboxFeed(Protocol):
    """The publisher's side of the outbox."""

    async def pending(self, limit: int) -> list[OutboxEntry]:
        """Entries not yet acknowledged by JetStream, oldest first."""
        ...

    async def mark_sent(self, msg_ids: Sequence[str]) -> None: ...

    async def note_failure(self, msg_ids: Sequence[str], error: str) -> None: ...


class IdempotencyClaims(Protocol):
    """MongoDB's `idempotency`: one claim per (project, key), by unique index."""

    async def claim(self, claim: Claim) -> Claim | None:
        """Inserts the claim. None when it was inserted (the caller owns the key); otherwise
        the claim that already holds the key."""
        ...

    async def get(self, project: str, key: str) -> Claim | None: ...

    async def take_over(self, stale: Claim, replacement: Claim) -> bool:
        """Compare-and-set: replaces the stale pending claim by `replacement` (same key, new
        owner and created_at) only if `stale.owner` still holds it. True when it did."""
        ...

    async def complete(self, project: str, key: str, owner: str, version: int) -> None:
        """Marks the owner's claim done with the version it created."""
        ...

    async def release(self, project: str, key: str, owner: str) -> None:
        """Deletes the owner's pending claim (its upload stored nothing), so a retry may claim."""
        ...

    async def restore(self, project: str, key: str, fingerprint: str, version: int) -> None:
        """Reindex: the key created this version (the lowest one wins)."""
        ...
