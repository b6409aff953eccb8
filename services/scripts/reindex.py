"""Rebuilds the script service's MongoDB documents from the bucket, which is the truth.

    python -m services.scripts reindex [--project P]

For every project under input/: a `versions` document per script, the `projects` document with
the latest version, the `idempotency` claims recorded in the scripts' S3 metadata, and an
`outbox` entry for every version that is not finished (no processed marker, no error log) and
has none yet. The last part closes the one window the upload path leaves open: a process that
dies between its S3 write and its outbox insert leaves a version nobody was told about.
Safe to run at any time, also while the service runs: every write is an idempotent upsert.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from cadpipe import layout
from cadpipe.ownership import Ownership
from services.scripts.domain import VersionRecord, uploaded_event
from services.scripts.ports import (
    IdempotencyClaims,
    Outbox,
    ProjectIndex,
    ScriptStore,
)

logger = logging.getLogger(__name__)

PAGE = 1000


@dataclass
class ReindexReport:
    projects: int = 0
    versions: int = 0
    events_queued: int = 0
    missing_versions: dict[str, list[int]] = field(default_factory=dict)
    """Holes in a project's versions (deleted by hand?): listed, never filled."""


async def keys_under(store: ScriptStore, prefix: str) -> AsyncIterator[str]:
    start_after = ""
    while True:
        page = await store.list_keys(prefix, start_after=start_after, limit=PAGE)
        for key in page:
            yield key
        if len(page) < PAGE:
            return
        start_after = page[-1]


async def reindex(
    store: ScriptStore,
    index: ProjectIndex,
    outbox: Outbox,
    claims: IdempotencyClaims,
    *,
    owners: Ownership | None = None,
    project: str | None = None,
    concurrency: int = 16,
) -> ReindexReport:
    prefix = layout.project_input_prefix(project) if project else layout.INPUT_PREFIX
    versions: dict[str, set[int]] = defaultdict(set)
    async for key in keys_under(store, prefix):
        if parsed := layout.parse_script_key(key):
            versions[parsed[0]].add(parsed[1])
    projects = {project} if project else set(versions) | set(await index.projects())
    report = ReindexReport()
    limit = asyncio.Semaphore(concurrency)
    for name in sorted(projects):
        await _reindex_project(
            store, index, outbox, claims, name, versions.get(name, set()), limit, report, owners
        )
    logger.info(
        "reindexed %d projects, %d versions, %d events queued",
        report.projects,
        report.versions,
        report.events_queued,
    )
    return report


async def _reindex_project(
    store: ScriptStore,
    index: ProjectIndex,
    outbox: Outbox,
    claims: IdempotencyClaims,
    project: str,
    versions: set[int],
    limit: asyncio.Semaphore,
    report: ReindexReport,
    owners: Ownership | None = None,
) -> None:
    async def one(version: int) -> VersionRecord | None:
        async with limit:
            record = await store.describe(project, version)
            if record is not None:
                await index.record_version(record)
            return record

    records = [r for r in await asyncio.gather(*(one(v) for v in sorted(versions))) if r]
    latest = max((r.version for r in records), default=0)
    await index.reset_project(project, latest)
    # the owner is on every version; the first one that names it is the creator's
    owner = next((r.owner for r in records if r.owner), "")
    if owners is not None:
        await owners.restore(project, owner)
    holes = sorted(set(range(1, latest + 1)) - {r.version for r in records})
    if holes:
        logger.warning("project %s: versions %s are missing from S3", project, holes)
        report.missing_versions[project] = holes

    first_by_key: dict[str, VersionRecord] = {}
    for record in records:  # in version order: the first version of a key wins
        if record.idempotency_key:
            first_by_key.setdefault(record.idempotency_key, record)
    for key, record in first_by_key.items():
        await claims.restore(project, key, record.fingerprint, record.version)

    finished = await finished_versions(store, project)
    entries = [uploaded_event(r) for r in records if r.version not in finished]
    known = await outbox.contains([e.msg_id for e in entries])
    for entry in entries:
        if entry.msg_id not in known:
            await outbox.add(entry)
            report.events_queued += 1
            logger.info(
                "project %s: queued the uploaded event of version %d", project, entry.version
            )
    report.projects += 1
    report.versions += len(records)


async def finished_versions(store: ScriptStore, project: str) -> set[int]:
    """Versions with a processed marker, or with an error log (how a worker of the older
    contract reports a failure): their uploaded event has done its job."""
    finished: set[int] = set()
    async for key in keys_under(store, layout.PROCESSED_PREFIX + project + "/"):
        if parsed := layout.parse_marker_key(key):
            finished.add(parsed[1])
    async for key in keys_under(store, layout.logs_prefix(project)):
        log = layout.parse_log_key(key)
        if log is not None and log.level == "error":
            finished.add(log.version)
    return finished
