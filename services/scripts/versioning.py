"""The script service's use cases, driving the ports: upload a script as the next version, list
versions, read one. The design is in docs/scripts-service.md; in short:

* S3 decides versions. An upload writes input/{p}/{p}_v{N}.py with If-None-Match: *, N being the
  index's latest + 1. When another writer holds N, the first free version above it is found by
  HEAD probes (exponential, then binary search: versions are contiguous) and tried next.
  Nothing is read and then written unconditionally, so no lock service is needed.
* Within one process, each upload of a project takes a version of its own from the project's
  sequence and puts at once, up to Options.puts_in_flight puts of the project at a time. It is
  not what makes versions unique (the conditional put is); it keeps a replica's own uploads
  from racing each other for one version, and a version whose put failed is handed out again
  first, so the hole it would leave below later versions is filled.
* After the put, the version document and an outbox entry (the uploaded event) are written to
  MongoDB before the call returns (together with those of uploads finishing at the same
  time); the publisher sends the entry to JetStream. That part runs in a task of its own,
  shielded from the caller's cancellation, so a client that gives up
  mid-upload cannot leave a stored version without its event. A MongoDB failure there is
  retried a few times in that task; when it outlasts them, the project is handed to the
  reconciler (reconcile.py), which records the version once MongoDB answers again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import heapq
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from cadpipe import errors
from cadpipe.callers import ANONYMOUS, Caller
from cadpipe.logs import current_request_id
from cadpipe.ownership import Ownership, RecordedOwner
from services.scripts.batching import GroupCommit
from services.scripts.domain import (
    CallerGone,
    Limits,
    OutboxEntry,
    ProjectCursor,
    ProjectSummary,
    ValidScript,
    VersionConflict,
    VersionRecord,
    check_project,
    check_version,
    decode_page_token,
    decode_projects_token,
    encode_page_token,
    encode_projects_token,
    new_record,
    page_size,
    projects_page_size,
    uploaded_event,
    validate_upload,
)
from services.scripts.idempotency import IdempotentUploads
from services.scripts.ports import (
    IdempotencyClaims,
    Outbox,
    ProjectIndex,
    ScriptStore,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], dt.datetime]


INLINE_CHECK_BYTES = 16 * 1024
"""Scripts up to this size are validated (compiled) on the event loop, larger ones in a thread."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class UploadRequest:
    project: str
    script: str | bytes | None
    metadata: Mapping[str, str]
    idempotency_key: str = ""
    caller: Caller = ANONYMOUS


@dataclass(frozen=True)
class UploadResult:
    record: VersionRecord
    replayed: bool = False


@dataclass(frozen=True)
class Page:
    records: list[VersionRecord]
    next_page_token: str


@dataclass(frozen=True)
class ProjectPage:
    projects: list[ProjectSummary]
    next_page_token: str


@dataclass(frozen=True)
class Options:
    limits: Limits = field(default_factory=Limits)
    max_version_attempts: int = 100
    idempotency_wait: float = 5.0
    """Seconds a second caller with the same idempotency key waits for the first to finish."""
    idempotency_stale: float = 60.0
    """Seconds after which a pending claim is presumed abandoned and may be taken over."""
    idempotency_poll: float = 0.05
    record_attempts: int = 4
    """Tries at writing a stored version's document and outbox entry (MongoDB may blip)."""
    record_backoff: float = 0.1
    """Seconds before the second try, doubled before each next one."""
    puts_in_flight: int = 16
    """Conditional puts of one project this process has in flight at once; 1 writes a
    project's versions strictly one after the other."""


class _ProjectSequences:
    """Per project, in this process: the next version to hand out, the versions whose puts are
    in flight, and versions handed out whose put failed (handed out again first, so that a hole
    left by a failed put is filled by the next upload). Kept while anyone uses the project, and
    for the most recently used projects."""

    @dataclass
    class Sequence:
        slots: asyncio.Semaphore
        next: int = 0
        """The next version to hand out; 0 until the first upload of the project."""
        probed: int = 0
        """The first version a probe found absent: conflicts below it need no new probe."""
        in_flight: set[int] = field(default_factory=set)
        free: list[int] = field(default_factory=list)
        """Heap of versions handed out whose put failed without landing."""
        users: int = 0
        settled: asyncio.Event = field(default_factory=asyncio.Event)
        """Set, and replaced, whenever a put in flight settles."""

        def reserve(self, latest: int) -> int:
            """The version to write: a freed one first (the index may record versions above
            it, but not it), else the next above `latest` and every version handed out."""
            if self.free:  # another writer may have filled it since: then its put says so
                version = heapq.heappop(self.free)
            else:
                version = max(self.next, latest + 1)
                self.next = version + 1
            self.in_flight.add(version)
            return version

        def settle(self, version: int, *, landed: bool) -> None:
            self.in_flight.discard(version)
            if not landed:
                heapq.heappush(self.free, version)
            settled, self.settled = self.settled, asyncio.Event()
            settled.set()

        async def settled_below(self, version: int) -> None:
            """Returns once every put of a lower version this process handed out has landed
            or failed. An upload is recorded only then, so the index's latest never passes a
            version that is still being written: should the process die meanwhile, the next
            upload's guess (the index's latest + 1) is that version, and fills it."""
            while any(v < version for v in self.in_flight):
                await self.settled.wait()

        def skip_to(self, version: int) -> None:
            """Versions below `version` are held (a probe found it to be the first absent)."""
            self.next = max(self.next, version)
            self.probed = max(self.probed, version)

    def __init__(self, puts_in_flight: int, memory: int = 10_000) -> None:
        self._puts_in_flight = puts_in_flight
        self._sequences: OrderedDict[str, _ProjectSequences.Sequence] = OrderedDict()
        self._memory = memory

    @asynccontextmanager
    async def slot(self, project: str) -> AsyncIterator[_ProjectSequences.Sequence]:
        """The project's sequence, once fewer than `puts_in_flight` of its puts are in flight."""
        sequence = self._sequences.get(project)
        if sequence is None:
            sequence = self._sequences[project] = _ProjectSequences.Sequence(
                asyncio.Semaphore(self._puts_in_flight)
            )
        self._sequences.move_to_end(project)
        sequence.users += 1
        try:
            async with sequence.slots:
                yield sequence
        finally:
            sequence.users -= 1
            self._forget_old()

    def _forget_old(self) -> None:
        while len(self._sequences) > self._memory:
            project, oldest = next(iter(self._sequences.items()))
            if oldest.users or oldest.free:
                return
            del self._sequences[project]


class Scripts:
    """The use cases of the script service over its ports."""

    def __init__(
        self,
        store: ScriptStore,
        index: ProjectIndex,
        outbox: Outbox,
        claims: IdempotencyClaims,
        options: Options = Options(),
        *,
        owners: Ownership | None = None,
        on_event: Callable[[OutboxEntry], None] = lambda entry: None,
        clock: Clock = utc_now,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._index = index
        self._outbox = outbox
        self._claims = claims
        self._owners = owners or Ownership()
        """Ownership(): none is recorded; only unrestricted callers see any project."""
        self._options = options
        self._on_event = on_event
        self._clock = clock
        self._new_id = new_id
        self._sleep = sleep
        self._sequences = _ProjectSequences(options.puts_in_flight)
        self._tasks: set[asyncio.Task[object]] = set()
        self._idempotent = IdempotentUploads(
            self,
            claims,
            store,
            index,
            wait=options.idempotency_wait,
            stale=options.idempotency_stale,
            poll=options.idempotency_poll,
            clock=clock,
            new_id=new_id,
            sleep=sleep,
        )
        self._recording: GroupCommit[tuple[VersionRecord, OutboxEntry]] = GroupCommit(
            self._write_records
        )
        self.unrecorded: set[str] = set()
        """Projects with a stored version this process could not record: the reconciler's."""
        self.held_elsewhere: dict[str, set[int]] = {}
        """Versions whose conditional put found another writer's object: the reconciler
        records those the index lacks (their writer may have died before recording them)."""

    # --- upload --------------------------------------------------------------------------

    async def upload(self, request: UploadRequest) -> UploadResult:
        check = functools.partial(
            validate_upload,
            request.project,
            request.script,
            request.metadata,
            request.idempotency_key,
            self._options.limits,
        )
        # compile() of a large script takes milliseconds of CPU: keep it off the event loop; a
        # small one costs less than the hop to a thread
        size = len(request.script or "")
        script = check() if size <= INLINE_CHECK_BYTES else await asyncio.to_thread(check)
        # the index's project document is also where ownership is recorded: one read for both
        recorded, latest = await self._index.owner_and_latest(script.project)
        owner = await self._owners.owner_for_upload(
            script.project, request.caller, read=RecordedOwner(recorded)
        )
        script = replace(script, owner=owner)
        if script.idempotency_key:
            record, replayed = await self._idempotent.upload(script, latest)
            return UploadResult(record, replayed)
        record = await self.shielded(functools.partial(self._store_and_record, script, latest))
        return UploadResult(record)

    async def _store_and_record(
        self, script: ValidScript, latest: int, gone: asyncio.Event
    ) -> VersionRecord:
        record = await self.put_next_version(script, latest, gone)
        await self.record(record)
        return record

    async def put_next_version(
        self, script: ValidScript, latest: int, gone: asyncio.Event
    ) -> VersionRecord:
        """Writes the script as the first free version above `latest`; S3 decides which.
        Stops before a put, with nothing stored, once the caller is `gone`.

        Several puts of one project are in flight at once (Options.puts_in_flight), each at a
        version of its own handed out by the project's sequence, so that a busy project is not
        held to one S3 round trip per version. A put that fails without landing gives its
        version back, and the project's next upload fills it."""
        project = script.project
        upload_id = self._new_id()
        async with self._sequences.slot(project) as sequence:
            uploaded_at = self._clock()
            for attempt in range(1, self._options.max_version_attempts + 1):
                if gone.is_set():
                    raise CallerGone(f"project {project!r}: the caller went away; nothing stored")
                version = sequence.reserve(latest)
                record = new_record(script, version, uploaded_at, upload_id)
                try:
                    stored = await self._put(record, script.body)
                except BaseException:
                    sequence.settle(version, landed=False)
                    raise
                sequence.settle(version, landed=True)  # ours or another writer's: it exists
                if stored:
                    if attempt > 1:
                        logger.info(
                            "project %s: version %d after %d attempts", project, version, attempt
                        )
                    await sequence.settled_below(version)
                    return record
                # Another writer holds it: perhaps one that died before recording it (a
                # replica killed with puts in flight): the reconciler makes sure it is indexed.
                self.held_elsewhere.setdefault(project, set()).add(version)
                if version >= sequence.probed:  # a sibling's probe may have looked already
                    sequence.skip_to(await self.first_absent_after(project, version))
        raise VersionConflict(
            f"project {project!r}: concurrent uploads took each of the "
            f"{self._options.max_version_attempts} versions this upload tried; nothing was "
            "stored, try again"
        )

    async def _put(self, record: VersionRecord, body: bytes) -> bool:
        """True when the object at record.key is this upload's. A conditional put whose
        response was lost and that the SDK retried answers 412 to its own first write, and a put
        that failed may still have landed: in both cases the object's upload-id tells."""
        try:
            if await self._store.put_if_absent(record, body):
                return True
        except errors.Unavailable:
            if await self._is_ours(record):
                return True
            raise
        return await self._is_ours(record)

    async def _is_ours(self, record: VersionRecord) -> bool:
        found = await self._store.describe(record.project, record.version)
        return found is not None and found.upload_id == record.upload_id

    async def first_absent_after(self, project: str, version: int) -> int:
        """The first version above `version` that S3 does not hold, `version` being held (or 0).

        Versions are contiguous (a version is only written once the one below it exists), so
        HEAD probes at version+1, +2, +4, ... find a free one and a binary search between the
        last held and the first free finds the boundary: O(log k) requests for k versions
        this process did not know about. A listing would be O(all versions), as S3 lists
        p_v10.py before p_v2.py.
        """
        held, step = version, 1
        free = version + step
        while await self._store.exists(project, free):
            held = free
            step *= 2
            free = version + step
        while free - held > 1:
            middle = (held + free) // 2
            if await self._store.exists(project, middle):
                held = middle
            else:
                free = middle
        return free

    async def record(self, record: VersionRecord) -> None:
        """Outbox entry and version document for a stored version. Both are idempotent, so a
        failure is retried; one that outlasts the retries leaves the project to the
        reconciler, and the caller is told that the version was stored."""
        entry = uploaded_event(record, request_id=current_request_id())
        delay = self._options.record_backoff
        for attempt in range(1, self._options.record_attempts + 1):
            try:
                await self._recording.submit((record, entry))
                break
            except errors.Unavailable as error:
                if attempt < self._options.record_attempts:
                    logger.warning(
                        "project %s: recording version %d failed (%s); retrying",
                        record.project,
                        record.version,
                        error,
                    )
                    await self._sleep(delay)
                    delay *= 2
                    continue
                self.unrecorded.add(record.project)
                raise errors.Unavailable(
                    f"the script was stored as version {record.version} of {record.project!r} but "
                    f"could not be recorded yet ({error}); it will be, and processed, once "
                    "MongoDB answers"
                ) from error
        self._on_event(entry)

    async def _write_records(self, batch: Sequence[tuple[VersionRecord, OutboxEntry]]) -> None:
        """The version documents and outbox entries of uploads that finished together."""
        await asyncio.gather(
            self._outbox.add_many([entry for _, entry in batch]),
            self._index.record_versions([record for record, _ in batch]),
        )

    async def shielded(self, work: Callable[[asyncio.Event], Awaitable[T]]) -> T:
        """Runs work in a task of its own that the caller's cancellation (client gone, deadline)
        does not interrupt: the steps after an S3 write must not be cut short. The work is
        told through the event that the caller is gone, so that it stores nothing new."""
        gone = asyncio.Event()
        task: asyncio.Task[T] = asyncio.ensure_future(work(gone))
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._task_done)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            gone.set()
            raise

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()  # retrieved here: nobody may be waiting for it any more
        if error is not None and not isinstance(error, CallerGone):
            logger.debug("upload task ended with %r", error)

    async def wait_idle(self) -> None:
        """Waits for uploads whose callers went away (at shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- reading ---------------------------------------------------------------------------

    async def get_version(
        self, project: str, version: int, caller: Caller = ANONYMOUS
    ) -> tuple[VersionRecord, bytes]:
        check_project(project)
        check_version(version)
        await self._owners.check_access(project, caller)
        found = await self._store.read(project, version)
        if found is None:
            raise errors.NotFound(f"project {project!r} has no version {version}")
        return found

    async def list_versions(
        self, project: str, requested_size: int, page_token: str, caller: Caller = ANONYMOUS
    ) -> Page:
        """Versions in order, a page at a time, from the index, checked against S3.

        The index may lag behind S3 (a version stored by a replica that crashed before
        indexing it, or whose MongoDB is another). Versions being contiguous, S3's truth is one
        number, its latest version: on the last page it is found by HEAD probes above the
        index's latest, and any version the index lacks is read from S3 and indexed.
        """
        check_project(project)
        size = page_size(requested_size)
        after = decode_page_token(page_token, project)
        await self._owners.check_access(project, caller)
        latest = await self._index.latest_version(project)
        if after + size >= latest:
            latest = await self.first_absent_after(project, latest) - 1
        last = min(after + size, latest)
        if last <= after:
            return Page([], "")
        found = await self._index.versions(project, after + 1, last)
        missing = [v for v in range(after + 1, last + 1) if v not in found]
        if missing:
            found.update(await self._index_from_s3(project, missing))
        records = [found[v] for v in range(after + 1, last + 1) if v in found]
        return Page(records, encode_page_token(project, last) if last < latest else "")

    async def list_projects(
        self, requested_size: int, page_token: str, caller: Caller = ANONYMOUS
    ) -> ProjectPage:
        """The caller's projects (every project for an unrestricted caller), newest activity
        first, from the index."""
        size = projects_page_size(requested_size)
        after = decode_projects_token(page_token)
        owner = None if caller.unrestricted else caller.name
        # one more than the page tells whether another page follows
        found = await self._index.list_projects(owner, after, size + 1)
        page = found[:size]
        if len(found) <= size:
            return ProjectPage(page, "")
        cursor = ProjectCursor(page[-1].updated_at, page[-1].project)
        return ProjectPage(page, encode_projects_token(cursor))

    async def _index_from_s3(self, project: str, versions: list[int]) -> dict[int, VersionRecord]:
        logger.info("project %s: indexing %d versions from S3", project, len(versions))
        limit = asyncio.Semaphore(16)

        async def one(version: int) -> VersionRecord | None:
            async with limit:
                record = await self._store.describe(project, version)
                if record is None:
                    logger.warning("project %s: version %d missing from S3", project, version)
                    return None
                await self._index.record_version(record)
                return record

        results = await asyncio.gather(*(one(v) for v in versions))
        return {r.version: r for r in results if r is not None}
