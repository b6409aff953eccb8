"""Uploads with an idempotency key: the key is claimed with a unique insert in MongoDB's
`idempotency` collection, then the upload runs as any other (VersionWriter, the Scripts use
case). A second caller with the same key waits, bounded, for the first to finish and replays
its version; a claim left pending by a crashed owner is taken over once stale, after looking
in S3 for the version it may have stored (docs/scripts-service.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol, TypeVar

from cadpipe import errors
from services.scripts.domain import (
    CallerGone,
    Claim,
    IdempotencyInProgress,
    IdempotencyMismatch,
    ValidScript,
    VersionConflict,
    VersionRecord,
)
from services.scripts.ports import IdempotencyClaims, ProjectIndex, ScriptStore

logger = logging.getLogger(__name__)

T = TypeVar("T")


class VersionWriter(Protocol):
    """What the upload use case (versioning.Scripts) does for every upload."""

    async def put_next_version(
        self, script: ValidScript, latest: int, gone: asyncio.Event
    ) -> VersionRecord: ...

    async def record(self, record: VersionRecord) -> None: ...

    async def shielded(self, work: Callable[[asyncio.Event], Awaitable[T]]) -> T: ...


class IdempotentUploads:
    def __init__(
        self,
        writer: VersionWriter,
        claims: IdempotencyClaims,
        store: ScriptStore,
        index: ProjectIndex,
        *,
        wait: float,
        stale: float,
        poll: float,
        clock: Callable[[], dt.datetime],
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._writer = writer
        self._claims = claims
        self._store = store
        self._index = index
        self._wait = wait
        """Seconds a second caller with the same key waits for the first to finish."""
        self._stale = stale
        """Seconds after which a pending claim is presumed abandoned and may be taken over."""
        self._poll = poll
        self._clock = clock
        self._new_id = new_id
        self._sleep = sleep

    async def upload(self, script: ValidScript, latest: int) -> tuple[VersionRecord, bool]:
        """Claim the key with a unique insert, then upload. A second caller with the same key
        waits (bounded) for the first to finish and replays its version; a claim left pending
        by a crashed owner is taken over after `idempotency_stale` seconds."""
        project, key = script.project, script.idempotency_key
        mine = Claim(
            project=project,
            key=key,
            owner=self._new_id(),
            fingerprint=script.fingerprint,
            created_at=self._clock(),
            from_version=latest,
        )
        stale_after = dt.timedelta(seconds=self._stale)
        deadline = time.monotonic() + self._wait
        held = await self._claims.claim(mine)
        while held is not None:
            if held.fingerprint != mine.fingerprint:
                raise IdempotencyMismatch(
                    f"idempotency key {key!r} of project {project!r} was first used with a "
                    "different script or metadata"
                )
            if held.state == "done":
                return (await self._replay(project, held.version), True)
            if held.is_stale(self._clock(), stale_after):
                mine = replace(mine, created_at=self._clock(), from_version=held.from_version)
                if await self._claims.take_over(held, mine):
                    logger.warning(
                        "project %s: took over idempotency key %r abandoned by %s",
                        project,
                        key,
                        held.owner,
                    )
                    return await self._writer.shielded(
                        functools.partial(self._finish_abandoned, script, mine, latest)
                    )
            elif time.monotonic() >= deadline:
                raise IdempotencyInProgress(
                    f"an upload with idempotency key {key!r} of project {project!r} is still "
                    "in progress; retry later to get its version"
                )
            else:
                await self._sleep(self._poll)
            held = await self._claims.get(project, key)
            if held is None:  # the owner stored nothing and let go: claim it afresh
                mine = replace(mine, created_at=self._clock())
                held = await self._claims.claim(mine)
        return await self._writer.shielded(
            functools.partial(self._store_claimed, script, mine, latest)
        )

    async def _store_claimed(
        self, script: ValidScript, claim: Claim, latest: int, gone: asyncio.Event
    ) -> tuple[VersionRecord, bool]:
        try:
            record = await self._writer.put_next_version(script, latest, gone)
        except (VersionConflict, CallerGone):
            # no put of ours landed: nothing is in S3, so a retry may claim the key afresh
            await self._claims.release(claim.project, claim.key, claim.owner)
            raise
        # Any other failure leaves the claim pending: the put may have landed. Whoever takes
        # the claim over once it is stale looks for the version in S3 first.
        await self._writer.record(record)
        await self._claims.complete(claim.project, claim.key, claim.owner, record.version)
        return (record, False)

    async def _finish_abandoned(
        self, script: ValidScript, claim: Claim, latest: int, gone: asyncio.Event
    ) -> tuple[VersionRecord, bool]:
        """The previous owner died after claiming; it may or may not have stored its version."""
        found = await self._find_by_idempotency_key(claim.project, claim.key, claim.from_version)
        if found is None:
            return await self._store_claimed(script, claim, latest, gone)
        await self._writer.record(found)
        await self._claims.complete(claim.project, claim.key, claim.owner, found.version)
        return (found, True)

    async def _find_by_idempotency_key(
        self, project: str, key: str, from_version: int
    ) -> VersionRecord | None:
        version = from_version + 1
        while (record := await self._store.describe(project, version)) is not None:
            if record.idempotency_key == key:
                return record
            version += 1
        return None

    async def _replay(self, project: str, version: int) -> VersionRecord:
        record = await self._index.get_version(project, version)
        if record is None:  # indexed elsewhere or not yet: S3 has it
            record = await self._store.describe(project, version)
        if record is None:
            raise errors.Unavailable(f"version {version} of {project!r} is recorded but not in S3")
        return record
