"""The generator's use cases: start a generation, read them, and run the loop

    write a script -> check it -> upload it (the next version, as the caller) -> wait for its
    run -> verify its geometry -> succeeded, or repair with the real error or the measured
    geometry, until max rounds or a round that does not improve.

Every change of state is stored (compare-and-set on the generation's sequence) before it is
published. Each round is resumable from what is stored: a runner that stops (restart, crash)
leaves the generation to the next one, which continues where the stored state says: a round
that was uploading uploads again with the same idempotency key and gets the same version.
Nothing outlives the generation's deadline: it ends failed, with the reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from cadpipe import errors, ownership
from cadpipe.callers import Caller
from cadpipe.logs import log_context
from services.generator import domain
from services.generator.domain import Generation, Round
from services.generator.ports import (
    CannotMake,
    CompletionWaiter,
    Expected,
    GenerationEvents,
    GenerationStore,
    ProjectOwners,
    ProviderError,
    ReportReader,
    ScriptRequest,
    ScriptUploader,
    ScriptWriter,
)

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


FREECAD_EITHER = "0.20 or 1.0 (write code that runs on both)"


@dataclass(frozen=True)
class Options:
    limits: domain.Limits = field(default_factory=domain.Limits)
    deadline_seconds: float = 900.0
    lease_seconds: float = 30.0
    freecad_version: str = ""
    """Told to the model until a report names the version the workers run; "" for "0.20 or
    1.0" (Debian 12 or 13)."""
    runner: str = "generator"
    """This instance's name, holding the leases of the generations it runs."""
    upload_attempts: int = 3
    max_concurrent: int = 32
    """Generations driven at once by this instance; more wait their turn (state "queued")."""
    retry_seconds: float = 0.5
    """First wait after a dependency did not answer; doubled up to 10 s, within the deadline."""


class LeaseLost(Exception):
    """Another runner holds the generation now; this one stops quietly."""


@dataclass
class Observer:
    """What the loop tells the metrics (services/generator/metrics.py)."""

    finished: Callable[[Generation], None] = lambda g: None
    provider_call: Callable[[Round, bool], None] = lambda r, ok: None


class Generator:
    def __init__(
        self,
        *,
        store: GenerationStore,
        writer: ScriptWriter,
        uploader: ScriptUploader,
        completions: CompletionWaiter,
        reports: ReportReader,
        events: GenerationEvents,
        owners: ProjectOwners,
        options: Options = Options(),
        clock: Clock = utc_now,
        observer: Observer | None = None,
    ) -> None:
        self._store = store
        self._writer = writer
        self._uploader = uploader
        self._completions = completions
        self._reports = reports
        self._events = events
        self._owners = owners
        self._options = options
        self.freecad_version = options.freecad_version or FREECAD_EITHER
        self._clock = clock
        self._observe = observer or Observer()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(options.max_concurrent)

    # --- requests ----------------------------------------------------------------------------

    async def check_access(
        self, project: str, caller: Caller, *, creating: bool = False
    ) -> str | None:
        """The project's owner, unless the caller may not see the project: NotFound, worded as
        for a project that does not exist. A generation may create a project (creating): its
        first upload claims it for the caller."""
        owner = await self._owners.owner_of(project)
        if caller.unrestricted or caller.may_access(owner) or (creating and owner is None):
            return owner
        raise errors.NotFound(ownership.not_found_message(project))

    async def start(self, request: domain.NewGeneration, caller: Caller) -> tuple[Generation, bool]:
        """Stores a new generation and starts running it; with an idempotency key used before,
        the generation it started (replayed True)."""
        owner = await self.check_access(request.project, caller, creating=True)
        if request.parent_version:
            if owner is None:
                raise errors.InvalidArgument(
                    f"parent_version: {request.project} has no versions yet",
                    field="parent_version",
                )
            try:
                await self._uploader.read(caller, request.project, request.parent_version)
            except errors.NotFound:
                raise errors.InvalidArgument(
                    f"parent_version: {request.project} has no version {request.parent_version}",
                    field="parent_version",
                ) from None
        now = self._clock()
        generation = Generation(
            id=uuid.uuid4().hex,
            project=request.project,
            prompt=request.prompt,
            caller=caller.name,
            caller_admin=caller.admin,
            created_at=now,
            updated_at=now,
            deadline_at=now + dt.timedelta(seconds=self._options.deadline_seconds),
            expected=request.expected,
            parent_version=request.parent_version,
            max_rounds=request.max_rounds,
            provider=self._writer.name,
            idempotency_key=request.idempotency_key,
            sequence=1,
        )
        existing = await self._store.insert(
            generation, runner=self._options.runner, lease_until=self._lease_until()
        )
        if existing is not None:
            first = (
                existing.prompt,
                existing.expected,
                existing.parent_version,
                existing.max_rounds,
            )
            if first != (
                request.prompt,
                request.expected,
                request.parent_version,
                request.max_rounds,
            ):
                raise errors.FailedPrecondition(
                    f"idempotency key {request.idempotency_key!r} was first used with another "
                    f"request (generation {existing.id}); use a new key for a new generation"
                )
            return existing, True
        await self._events.publish(generation)
        self.run_in_background(generation)
        return generation, False

    async def get(self, project: str, generation_id: str, caller: Caller) -> Generation:
        owner = await self._owners.owner_of(project)
        found = await self._store.get(project, generation_id)
        if not self._may_read(caller, owner, [found] if found else []):
            raise errors.NotFound(ownership.not_found_message(project))
        if found is None or not _may_see(caller, found):
            raise errors.NotFound(f"{project} has no generation {generation_id!r}")
        return found

    async def page(
        self, project: str, caller: Caller, *, page_size: int, page_token: str
    ) -> tuple[list[Generation], str]:
        owner = await self._owners.owner_of(project)
        if page_size < 0 or page_size > 100:
            raise errors.InvalidArgument(
                f"page_size: 1 to 100, or 0 for 20 (got {page_size})", field="page_size"
            )
        found, token = await self._store.page(project, limit=page_size or 20, after=page_token)
        if not self._may_read(caller, owner, found):
            raise errors.NotFound(ownership.not_found_message(project))
        return [g for g in found if _may_see(caller, g)], token

    @staticmethod
    def _may_read(caller: Caller, owner: str | None, generations: list[Generation] | None) -> bool:
        """The project's readers; and, before its first version claims it (owner None), the
        callers of its generations: whoever started one can follow it from the start."""
        if caller.unrestricted or caller.may_access(owner):
            return True
        return owner is None and any(g.caller == caller.name for g in generations or [])

    async def summary(self, window_seconds: int) -> domain.AiSummary:
        if window_seconds < 0:
            raise errors.InvalidArgument("window_seconds: 0 (all) or more", field="window_seconds")
        since = self._clock() - dt.timedelta(seconds=window_seconds) if window_seconds else None
        return domain.summarize(await self._store.since(since))

    # --- running -----------------------------------------------------------------------------

    def run_in_background(self, generation: Generation) -> None:
        if generation.id in self._running:
            return
        task = asyncio.create_task(self.run(generation), name=f"generation-{generation.id}")
        self._running[generation.id] = task
        task.add_done_callback(lambda _: self._running.pop(generation.id, None))

    @property
    def running(self) -> int:
        return len(self._running)

    async def resume_lapsed(self, limit: int = 50) -> int:
        """Takes over the unfinished generations no runner holds (their runner stopped) and
        runs them; returns how many."""
        now = self._clock()
        claimed = await self._store.claim_lapsed(
            self._options.runner, now=now, until=self._lease_until(), limit=limit
        )
        for generation in claimed:
            logger.info("resuming generation %s of %s", generation.id, generation.project)
            self.run_in_background(generation)
        return len(claimed)

    async def renew_leases(self) -> None:
        """Only the generations running here: one whose task ended without finishing (its last
        save's answer lost) lapses and is resumed from what is stored."""
        await self._store.renew(
            self._options.runner, list(self._running), until=self._lease_until()
        )

    async def stop(self) -> None:
        """Stops the running generations where they are (their state is stored) and hands them
        to the next runner at once."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self._store.release(self._options.runner, now=self._clock())
        except errors.Unavailable as error:  # the leases lapse on their own
            logger.warning("could not release running generations: %s", error)

    async def wait_idle(self) -> None:
        """For tests: until no generation runs here."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    async def run(self, generation: Generation) -> None:
        with log_context(project=generation.project, generation=generation.id):
            await self._run(generation)

    async def _run(self, generation: Generation) -> None:
        run = _Run(self, generation)
        remaining = (generation.deadline_at - self._clock()).total_seconds()
        waited_on: list[str] = []
        try:
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining), self._slots:
                await self._drive_through_outages(run, waited_on)
        except TimeoutError:
            allowed = (generation.deadline_at - generation.created_at).total_seconds()
            await run.fail(
                f"the generation did not finish within its deadline of {allowed:g} s"
                + (f" (round {run.generation.round})" if run.generation.round else "")
                + (f"; last: {waited_on[-1]}" if waited_on else "")
            )
        except LeaseLost:
            logger.info("generation %s is held by another runner now", generation.id)
        except asyncio.CancelledError:
            raise
        except errors.CadpipeError as error:
            await run.fail(error.message)
        except Exception as error:  # a bug must still end the generation, never leave it hanging
            logger.exception("generation %s failed", generation.id)
            await run.fail(f"internal error: {type(error).__name__}")

    async def _drive_through_outages(self, run: _Run, waited_on: list[str]) -> None:
        """A service or MongoDB that does not answer (Unavailable) is waited for, with backoff,
        and the generation continues from its stored state; the deadline bounds the wait.
        A provider's failure is not retried here: its round records it."""
        backoff = self._options.retry_seconds
        while True:
            try:
                await run.drive()
                return
            except ProviderError:
                raise
            except errors.Unavailable as error:
                waited_on.append(error.message)
                logger.warning(
                    "generation %s waits: %s; retrying in %.1fs",
                    run.generation.id,
                    error.message,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def _lease_until(self) -> dt.datetime:
        return self._clock() + dt.timedelta(seconds=self._options.lease_seconds)


def _may_see(caller: Caller, generation: Generation) -> bool:
    return caller.unrestricted or generation.caller in ("", caller.name)


class _Run:
    """One runner's drive of one generation: each step reads the stored state and moves it on."""

    def __init__(self, generator: Generator, generation: Generation) -> None:
        self.g = generator
        self.generation = generation
        self.caller = Caller(name=generation.caller, admin=generation.caller_admin)
        self._parent_script: str | None = None
        self._best_distance = float("inf")

    # storing: every change is stored first, then published

    async def save(self, generation: Generation) -> Generation:
        stored = replace(
            generation, sequence=self.generation.sequence + 1, updated_at=self.g._clock()
        )
        if not await self.g._store.save(
            stored, runner=self.g._options.runner, lease_until=self.g._lease_until()
        ):
            raise LeaseLost
        self.generation = stored
        await self.g._events.publish(stored)
        if stored.terminal:
            self.g._observe.finished(stored)
        return stored

    async def fail(self, reason: str) -> None:
        if self.generation.terminal:
            return
        logger.info("generation %s failed: %s", self.generation.id, reason)
        try:
            await self.save(self.generation.failed(reason, self.g._clock()))
        except LeaseLost:
            pass
        except errors.CadpipeError as error:  # the next runner will find it and end it
            logger.warning("generation %s: failure not stored: %s", self.generation.id, error)

    # the loop

    async def drive(self) -> None:
        if self.generation.parent_version:
            self._parent_script = await self.g._uploader.read(
                self.caller, self.generation.project, self.generation.parent_version
            )
        for r in self.generation.rounds:  # a resumed generation remembers its best geometry
            if r.state == domain.MISMATCH and r.measured is not None:
                distance = domain.verify(r.measured, r.expected).distance
                self._best_distance = min(self._best_distance, distance)
        while not self.generation.terminal:
            current = self.generation.current
            if current is None or current.finished:
                if not await self._next_round(current):
                    return
                continue
            if current.state == domain.WRITING:
                await self._write(current)
            elif current.state == domain.UPLOADING:
                await self._upload(current)
            elif current.state == domain.PROCESSING:
                await self._wait(current)
            elif current.state == domain.COMPLETED:
                await self._verify(current)
            else:
                raise AssertionError(f"unknown round state {current.state!r}")

    async def _next_round(self, last: Round | None) -> bool:
        generation = self.generation
        if last is not None:
            if last.state == domain.VERIFIED:
                await self.save(generation.succeeded(last.version, self.g._clock()))
                return False
            if last.state == domain.PROVIDER_ERROR:
                await self.fail(last.feedback)
                return False
            if last.round >= generation.max_rounds:
                await self.fail(
                    f"no round succeeded in {generation.max_rounds}; the last: "
                    f"{_first_line(last.feedback)}"
                )
                return False
            earlier = generation.rounds[:-1]
            distance = (
                domain.verify(last.measured, last.expected).distance
                if last.state == domain.MISMATCH
                else float("inf")
            )
            if not domain.improves(last, earlier, distance=distance, best=self._best_distance):
                await self.fail(
                    f"round {last.round} did not improve on round {earlier[-1].round}: "
                    f"{_first_line(last.feedback)}"
                )
                return False
            self._best_distance = min(self._best_distance, distance)
        number = last.round + 1 if last else 1
        state = domain.REPAIRING if last else domain.GENERATING
        await self.save(
            generation.with_round(Round(round=number, started_at=self.g._clock()), state=state)
        )
        return True

    async def _write(self, current: Round) -> None:
        generation = self.generation
        request = ScriptRequest(
            prompt=generation.prompt,
            freecad_version=self.g.freecad_version,
            expected=generation.expected or Expected(),
            parent_script=self._parent_script,
            attempts=generation.attempts(),
        )
        started = time.perf_counter()
        try:
            completion = await self.g._writer.write(request)
        except (ProviderError, CannotMake) as error:
            failed = replace(
                current,
                state=domain.PROVIDER_ERROR,
                provider=self.g._writer.name,
                feedback=error.message,
                latency_seconds=time.perf_counter() - started,
                finished_at=self.g._clock(),
            )
            self.g._observe.provider_call(failed, False)
            await self.save(generation.with_round(failed))
            return
        written = replace(
            current,
            script=completion.script,
            provider=completion.provider,
            model=completion.model,
            tokens_in=completion.tokens_in,
            tokens_out=completion.tokens_out,
            cost_usd=completion.cost_usd,
            latency_seconds=completion.latency_seconds or time.perf_counter() - started,
            expected=generation.expected or completion.expected,
        )
        self.g._observe.provider_call(written, True)
        refusal = domain.check_script(
            completion.script, max_bytes=self.g._options.limits.max_script_bytes
        )
        if refusal is not None:
            written = replace(
                written, state=domain.REJECTED, feedback=refusal, finished_at=self.g._clock()
            )
        else:
            written = replace(written, state=domain.UPLOADING)
        await self.save(generation.with_round(written))

    async def _upload(self, current: Round) -> None:
        generation = self.generation
        metadata = domain.provenance(
            generation, current, prompt_digest=domain.prompt_hash(generation.prompt)
        )
        attempt = 0
        while True:
            attempt += 1
            try:
                version = await self.g._uploader.upload(
                    self.caller,
                    generation.project,
                    current.script,
                    metadata,
                    domain.upload_key(generation.id, current.round),
                )
                break
            except errors.InvalidArgument as error:
                await self.save(
                    generation.with_round(
                        replace(
                            current,
                            state=domain.REJECTED,
                            feedback=f"the script service refused the script: {error.message}",
                            finished_at=self.g._clock(),
                        )
                    )
                )
                return
            except errors.Unavailable:
                if attempt >= self.g._options.upload_attempts:
                    raise
                await asyncio.sleep(0.5 * attempt)
        await self.save(
            generation.with_round(replace(current, state=domain.PROCESSING, version=version))
        )

    async def _wait(self, current: Round) -> None:
        outcome = await self.g._completions.wait(
            self.caller, self.generation.project, current.version
        )
        if outcome.state == domain.COMPLETED:
            await self.save(
                self.generation.with_round(
                    replace(current, state=domain.COMPLETED), state=domain.VERIFYING
                )
            )
            return
        await self.save(
            self.generation.with_round(
                replace(
                    current,
                    state=domain.TIMEOUT if outcome.state == domain.TIMEOUT else domain.ERROR,
                    feedback=domain.run_feedback(outcome.state, outcome.error),
                    finished_at=self.g._clock(),
                )
            )
        )

    async def _verify(self, current: Round) -> None:
        report = await self.g._reports.report(self.caller, self.generation.project, current.version)
        if report.freecad_version:
            self.g.freecad_version = report.freecad_version  # what the workers really run
        verdict = domain.verify(report.measured, current.expected)
        await self.save(
            self.generation.with_round(
                replace(
                    current,
                    state=domain.VERIFIED if verdict.ok else domain.MISMATCH,
                    measured=report.measured,
                    feedback=verdict.feedback,
                    finished_at=self.g._clock(),
                )
            )
        )


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else ""
