"""The watcher's service layer: which versions are pending, checking them in S3, deciding them
once, and publishing each completion event once.

* Pending versions come from the uploaded events (stored in MongoDB before the event is acked)
  and, through leases, from MongoDB: on start, and whenever another replica's lease lapses.
  Each replica checks only the versions it holds a lease on, so the S3 cost grows with the
  pending versions, not with the replicas.
* A check reads S3 (ports.ResultReader.look) and asks the domain for an outcome. A decision is
  a compare-and-set in MongoDB; only the replica whose update matched publishes the event.
* The compare-and-set records event_published: false; the event is marked published after
  JetStream acknowledged it. A crash or a NATS outage in between leaves the job unpublished, and
  the sweep (any replica) publishes it again. The version's Nats-Msg-Id makes a repeat a no-op on
  the stream, so the event is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from cadpipe.logs import log_context
from cadpipe.started import StartedRecord
from services.watcher import domain, messages
from services.watcher.broadcast import StatusBroadcast
from services.watcher.domain import Job, Outcome, Policy, PollPolicy
from services.watcher.ports import EventPublisher, JobRepository, ResultReader

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
JobKey = tuple[str, int]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class WatcherConfig:
    policy: Policy
    poll: PollPolicy
    lease: dt.timedelta = dt.timedelta(seconds=10)
    sweep_after: dt.timedelta = dt.timedelta(seconds=5)
    max_concurrent_checks: int = 16
    claim_batch: int = 500

    @property
    def maintain_every(self) -> float:
        """Leases are renewed three times per lease, so one slow round does not lose them."""
        return self.lease.total_seconds() / 3


@dataclass
class _Pending:
    job: Job
    due: float  # time.monotonic() of the next check
    full_due: float  # time.monotonic() from which the next check is a full look
    error_log_seen_since: dt.datetime | None = None
    checking: bool = False
    nudged: bool = False
    nudged_full: bool = False

    @property
    def next_due(self) -> float:
        return min(self.due, self.full_due)


@dataclass
class Counters:
    checks: int = 0
    decided: int = 0
    lost_races: int = 0
    published: int = 0
    republished: int = 0
    publish_failures: int = 0
    check_failures: int = 0
    claimed: int = 0


class Watcher:
    def __init__(
        self,
        jobs: JobRepository,
        results: ResultReader,
        events: EventPublisher,
        statuses: StatusBroadcast,
        config: WatcherConfig,
        *,
        owner: str,
        clock: Clock = utc_now,
        on_decided: Callable[[Job], None] = lambda job: None,
    ) -> None:
        self._jobs = jobs
        self._results = results
        self._events = events
        self._statuses = statuses
        self._config = config
        self.owner = owner
        self._clock = clock
        self._on_decided = on_decided
        self._pending: dict[JobKey, _Pending] = {}
        self._queued = 0
        """Pending versions still queued, as the last round of the poll loop counted them:
        they share the polling budget for queued versions (PollPolicy)."""
        self._wake = asyncio.Event()
        self._checks: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(config.max_concurrent_checks)
        self.counters = Counters()

    @property
    def pending(self) -> set[JobKey]:
        return set(self._pending)

    # --- learning of versions ----------------------------------------------------------------

    async def accept_upload(
        self,
        project: str,
        version: int,
        *,
        uploaded_at: dt.datetime | None,
        script_key: str = "",
        project_owner: str = "",
    ) -> None:
        """Stores the version as a queued job (idempotent) and starts checking it. Raises
        when MongoDB does not take it: the caller must not ack the event then."""
        now = self._clock()
        job = domain.new_job(
            project,
            version,
            uploaded_at=uploaded_at or now,
            script_key=script_key,
            project_owner=project_owner,
        )
        stored, owner = await self._jobs.add(
            job, owner=self.owner, lease_until=now + self._config.lease
        )
        if stored.terminal or owner != self.owner:
            return  # a redelivery: decided already, or another replica holds it
        if (project, version) not in self._pending:
            logger.info("version %d of %s is pending", version, project)
            self._statuses.publish(messages.project_status(project, stored))
        self._track(stored, first_full_look_in=self._full_look_in(stored, now))

    def _full_look_in(self, job: Job, now: dt.datetime) -> float:
        if self._config.poll.full_interval is None:
            return 0.0
        return domain.next_full_look_in(
            job, now=now, poll=self._config.poll, policy=self._config.policy, queued=self._queued
        )

    def _track(self, job: Job, *, first_full_look_in: float = 0.0) -> None:
        """Starts checking a pending version: a light check at once; its first full look after
        `first_full_look_in` (a version just uploaded cannot have left a log or a marker yet;
        one taken over from another replica may have, long ago)."""
        key = (job.project, job.version)
        if key not in self._pending:
            now = time.monotonic()
            self._pending[key] = _Pending(job=job, due=now, full_due=now + first_full_look_in)
            # counted at once, so that a burst of uploads spreads its first full looks
            self._queued += job.state == domain.QUEUED
            self._wake.set()

    def nudge(self, project: str, version: int, finished: bool = True) -> None:
        """Our worker says it started or finished this version: check it now (S3 still
        decides). A finish brings a full look; a start a light one (its started record, then
        its marker)."""
        pending = self._pending.get((project, version))
        if pending is None:
            return  # not ours, or not known yet (its uploaded event brings a check at once)
        if pending.checking:
            # the running check may have looked before the record or the marker landed
            pending.nudged = True
            pending.nudged_full = pending.nudged_full or finished
        else:
            now = time.monotonic()
            pending.due = now
            if finished:
                pending.full_due = now
        self._wake.set()

    # --- checking ----------------------------------------------------------------------------

    async def check(self, project: str, version: int, *, full: bool | None = None) -> Job | None:
        """One check of a pending version. Returns the terminal job when this check decided it
        (or found it decided elsewhere), None while it is still queued or processing.

        full: a full look (marker, started record, logs) or a light one (one exact key); by
        default, full when its full look is due."""
        pending = self._pending.get((project, version))
        if pending is None:
            return None
        self.counters.checks += 1
        if full is None:
            full = self._config.poll.full_interval is None or pending.full_due <= time.monotonic()
        look = domain.plan_look(pending.job, full=full)
        found = await self._results.look(project, version, look)
        now = self._clock()
        if look.started and found.started is not None and not found.started.expired:
            if not await self._start(pending, found.started):
                return await self._jobs.get(project, version)
            if not look.marker:
                # Started: its marker may be there already (a short job, a lost nudge).
                found = await self._results.look(
                    project, version, domain.plan_look(pending.job, full=False)
                )
                now = self._clock()
        if found.logs_read:
            if found.marker is None and found.error_logs:
                pending.error_log_seen_since = pending.error_log_seen_since or now
            else:
                pending.error_log_seen_since = None
        outcome = domain.decide(
            pending.job,
            found,
            now=now,
            policy=self._config.policy,
            error_log_seen_since=pending.error_log_seen_since,
        )
        if outcome is None:
            self._schedule(pending, now, after_full_look=found.logs_read)
            return None
        if outcome.needs_expiry:
            expiry = StartedRecord("expired", now, reason=outcome.error)
            if not await self._results.expire(project, version, expiry):
                # A worker (or another watcher) took the started record first: look again.
                pending.due = pending.full_due = time.monotonic()
                return None
        return await self._decide(pending.job, outcome, now)

    def _schedule(self, pending: _Pending, now: dt.datetime, *, after_full_look: bool) -> None:
        """The next light check, and after a full look the next full one (a light look leaves
        the full look's time as it was)."""
        moment = time.monotonic()

        def after(interval: Callable[..., float]) -> float:
            return moment + interval(
                pending.job,
                now=now,
                poll=self._config.poll,
                policy=self._config.policy,
                error_log_seen_since=pending.error_log_seen_since,
                queued=self._queued,
            )

        pending.due = after(domain.next_check_in)
        if after_full_look:
            pending.full_due = after(domain.next_full_look_in)

    async def _start(self, pending: _Pending, record: StartedRecord) -> bool:
        """queued -> processing, by compare-and-set. False when the job is no longer pending
        here (decided elsewhere meanwhile)."""
        job = domain.start(pending.job, record)
        if await self._jobs.start(job):
            logger.info("version %d of %s started", job.version, job.project)
            self._statuses.publish(messages.project_status(job.project, job))
        else:
            stored = await self._jobs.get(job.project, job.version)
            if stored is None or stored.terminal:
                # Another replica decided it first (its lease overlapped ours).
                self.counters.lost_races += 1
                self._pending.pop((job.project, job.version), None)
                return False
            job = stored
        pending.job = job
        return True

    async def _decide(self, job: Job, outcome: Outcome, now: dt.datetime) -> Job:
        if outcome.needs_error_summary:
            outcome = domain.with_error_summary(
                outcome, await self._results.read_text(outcome.log_key)
            )
        finished = domain.finish(job, outcome, detected_at=now)
        won = await self._jobs.finish(finished)
        self._pending.pop((job.project, job.version), None)
        if not won:
            # Another replica decided first (its lease overlapped ours); it publishes.
            self.counters.lost_races += 1
            logger.info("version %d of %s was decided by another watcher", job.version, job.project)
            return await self._jobs.get(job.project, job.version) or finished
        self.counters.decided += 1
        self._on_decided(finished)
        logger.info(
            "version %d of %s: %s after %.2f s",
            job.version,
            job.project,
            finished.state,
            finished.duration_seconds,
        )
        self._statuses.publish(messages.project_status(job.project, finished))
        await self._publish(finished)
        return finished

    async def _publish(self, job: Job, *, again: bool = False) -> bool:
        try:
            await self._events.publish_finished(messages.job_finished(job))
        except Exception as error:  # logged; the sweep publishes it later
            self.counters.publish_failures += 1
            logger.warning(
                "completion event of %s v%d not published (%s); the sweep retries it",
                job.project,
                job.version,
                error,
            )
            return False
        if again:
            self.counters.republished += 1
        else:
            self.counters.published += 1
        try:
            await self._jobs.mark_published(job.project, job.version)
        except Exception as error:  # a repeat is deduplicated by Nats-Msg-Id
            logger.warning("could not mark %s v%d published (%s)", job.project, job.version, error)
        return True

    async def _run_check(self, pending: _Pending) -> None:
        key = (pending.job.project, pending.job.version)
        try:
            async with self._limit:
                with log_context(project=key[0], version=key[1]):
                    await self.check(*key)
        except Exception as error:  # logged; the version is checked again later
            self.counters.check_failures += 1
            logger.warning("check of %s v%d failed: %s", key[0], key[1], error)
            pending.due = time.monotonic() + self._config.poll.max_interval
            pending.full_due = max(pending.full_due, pending.due)
        finally:
            pending.checking = False
            if pending.nudged:
                pending.nudged = False
                pending.due = time.monotonic()
                if pending.nudged_full:
                    pending.nudged_full = False
                    pending.full_due = pending.due
            self._wake.set()

    async def run(self) -> None:
        """Checks pending versions as they fall due, and keeps leases and events in order,
        until cancelled."""
        maintenance = asyncio.create_task(self._maintain_forever(), name="watcher-maintenance")
        try:
            await self._poll_forever()
        finally:
            maintenance.cancel()
            for task in list(self._checks):
                task.cancel()
            await asyncio.gather(maintenance, *self._checks, return_exceptions=True)

    async def _poll_forever(self) -> None:
        while True:
            self._wake.clear()
            now = time.monotonic()
            next_due: float | None = None
            queued = 0
            for pending in list(self._pending.values()):
                queued += pending.job.state == domain.QUEUED
                if pending.checking:
                    continue
                due = pending.next_due
                if due <= now:
                    pending.checking = True
                    task = asyncio.create_task(self._run_check(pending))
                    self._checks.add(task)
                    task.add_done_callback(self._checks.discard)
                else:
                    next_due = due if next_due is None else min(next_due, due)
            self._queued = queued
            timeout = None if next_due is None else max(0.0, next_due - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    # --- leases and the sweep ----------------------------------------------------------------

    async def maintain(self) -> None:
        """One round: renew this replica's leases, take over lapsed ones, publish events a crash
        or an outage left unpublished."""
        now = self._clock()
        until = now + self._config.lease
        await self._jobs.renew_leases(self.owner, until=until)
        claimed = await self._jobs.claim_lapsed(
            self.owner, now=now, until=until, limit=self._config.claim_batch
        )
        for job in claimed:
            if (job.project, job.version) not in self._pending:
                self.counters.claimed += 1
                logger.info("took over pending version %d of %s", job.version, job.project)
            self._track(job)
        for job in await self._jobs.unpublished(
            decided_before=now - self._config.sweep_after, limit=self._config.claim_batch
        ):
            logger.info("publishing the completion event of %s v%d again", job.project, job.version)
            await self._publish(job, again=True)

    async def _maintain_forever(self) -> None:
        while True:
            try:
                await self.maintain()
            except Exception as error:  # logged; the next round retries
                logger.warning("lease and event maintenance failed: %s", error)
            await asyncio.sleep(self._config.maintain_every)

    async def release(self) -> None:
        """Orderly shutdown: other replicas take this one's pending versions at once."""
        released = await self._jobs.release(self.owner)
        self._pending.clear()
        if released:
            logger.info("released %d pending versions to other watchers", released)
