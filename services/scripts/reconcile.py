"""Finds script versions that S3 holds and the index lacks, and records them with their
uploaded event: what an upload leaves behind when MongoDB fails after its S3 put for longer
than the upload's own retries.

Versions are contiguous, so a project's versions missing from the index are the ones above the
index's latest, found by the same HEAD probes as uploads use (Scripts.first_absent_after). A
version already finished (its processed marker or error log is there) is recorded without an
event, as reindex does.

Each pass covers the projects whose record failed in this process (Scripts.unrecorded), and the
versions an upload's conditional put found held by another writer (Scripts.held_elsewhere) that
the index lacks: a replica killed with puts in flight may have left some unrecorded; every
`full_every` passes it covers every project of the index, for versions left by a replica that
failed the same way and then stopped. A version stored by a replica that died between its put
and its claim of a new project is left to `reindex` (docs/scripts-service.md).
"""

from __future__ import annotations

import asyncio
import logging

from cadpipe import errors
from services.scripts.domain import uploaded_event
from services.scripts.ports import Outbox, ProjectIndex, ScriptStore
from services.scripts.reindex import finished_versions
from services.scripts.versioning import Scripts

logger = logging.getLogger(__name__)


async def reconcile_project(
    scripts: Scripts, store: ScriptStore, index: ProjectIndex, outbox: Outbox, project: str
) -> int:
    """Records the versions of the project that S3 holds above the index's latest, queueing
    the uploaded event of those not finished; returns how many it recorded."""
    latest = await index.latest_version(project)
    in_s3 = await scripts.first_absent_after(project, latest) - 1
    if in_s3 <= latest:
        return 0
    finished = await finished_versions(store, project)
    recorded = 0
    for version in range(latest + 1, in_s3 + 1):
        record = await store.describe(project, version)
        if record is None:  # deleted meanwhile: nothing to record
            continue
        if version not in finished:
            await outbox.add(uploaded_event(record))
        await index.record_version(record)
        recorded += 1
        logger.info("project %s: recorded version %d, which S3 held unindexed", project, version)
    return recorded


async def record_held(
    store: ScriptStore, index: ProjectIndex, outbox: Outbox, project: str, versions: set[int]
) -> int:
    """Records those of the versions (held in S3 by another writer, as a put found) that the
    index lacks, queueing the uploaded event of those not finished; returns how many."""
    missing = []
    for version in sorted(versions):
        if await index.get_version(project, version) is None:
            missing.append(version)
    if not missing:
        return 0
    finished = await finished_versions(store, project)
    for version in missing:
        record = await store.describe(project, version)
        if record is None:
            continue
        if version not in finished:
            await outbox.add(uploaded_event(record))
        await index.record_version(record)
        logger.info("project %s: recorded version %d, which S3 held unindexed", project, version)
    return len(missing)


class Reconciler:
    def __init__(
        self,
        scripts: Scripts,
        store: ScriptStore,
        index: ProjectIndex,
        outbox: Outbox,
        *,
        interval: float,
        full_every: int,
    ) -> None:
        self._scripts = scripts
        self._store = store
        self._index = index
        self._outbox = outbox
        self._interval = interval
        self._full_every = full_every
        self.passes = 0
        self.recorded = 0

    async def pass_once(self, *, full: bool = False) -> int:
        """One pass; the projects it could not reconcile stay for the next one."""
        projects = set(self._scripts.unrecorded)
        if full:
            projects |= set(await self._index.projects())
        recorded = 0
        for project in sorted(projects):
            try:
                recorded += await reconcile_project(
                    self._scripts, self._store, self._index, self._outbox, project
                )
            except errors.Unavailable as error:
                logger.warning("project %s not reconciled yet: %s", project, error)
                continue
            self._scripts.unrecorded.discard(project)
        held = self._scripts.held_elsewhere
        for project in sorted(held):
            versions = held.pop(project)
            try:
                recorded += await record_held(
                    self._store, self._index, self._outbox, project, versions
                )
            except errors.Unavailable as error:
                logger.warning("project %s not reconciled yet: %s", project, error)
                held.setdefault(project, set()).update(versions)
        self.passes += 1
        self.recorded += recorded
        return recorded

    async def run(self) -> None:
        """Until cancelled; the first pass is a full one (this replica may replace one that
        stopped with versions unrecorded)."""
        while True:
            full = self._full_every > 0 and self.passes % self._full_every == 0
            try:
                await self.pass_once(full=full)
            except errors.Unavailable as error:  # the index could not list its projects
                logger.warning("reconciliation pass skipped: %s", error)
                self.passes += 1
            await asyncio.sleep(self._interval)
