"""Work intake: a JetStream durable pull consumer on the uploaded events, shared by every worker
replica (each message goes to one of them). A message is acknowledged only once its version is
finished in S3; while a job runs or waits here, the worker tells JetStream it is still at it, so
it is not redelivered, and a worker that dies stops doing so, so its jobs are.

Fetched messages wait in a small buffer (`intake_buffer`) from which free slots take them in
turns between owners (domain/fairness.py), so one owner's flood delays others by at most one job
per slot. A slot is one of the worker's cores (`concurrency`): a job holds it until FreeCAD is
done, then stores its results without it, so the next job starts meanwhile (at most
`jobs_in_flight` jobs in all). When S3 or NATS fail, the job in hand goes back to the buffer,
its delivery unspent, and the intake takes no work until its dependency check passes again,
probing with exponential back-off (docs/worker.md, "Fair intake" and "Outages")."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.errors
from google.protobuf.json_format import ParseError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cadpipe import errors, messaging
from cadpipe.logs import log_context
from cadpipe.v1 import events_pb2
from services.worker.domain.fairness import FairQueue, Waiting
from services.worker.domain.job import InvalidJob, Job, job_from_event
from services.worker.jobs import JobService, NeverToRun, ScriptMissing

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntakeConfig:
    consumer_name: str
    filter_subjects: tuple[str, ...]
    ack_wait_seconds: float
    max_deliver: int
    concurrency: int
    """Jobs running FreeCAD at once: the slots the buffer's jobs are dispatched to."""
    fetch_timeout_seconds: float
    jobs_in_flight: int = 0
    """Jobs held at once, those storing their results included; 0: `concurrency` (a job
    holds its slot until it is finished)."""
    buffer: int = 16
    """Messages held here at most, running ones included (the window fairness sees)."""
    fair: bool = True
    per_owner_cap: int = 0
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 8.0

    @property
    def in_flight(self) -> int:
        """Jobs held at once: never fewer than the slots."""
        return max(self.jobs_in_flight, self.concurrency)


@dataclass(frozen=True)
class Delivery:
    """A fetched message and the job it asks for."""

    message: Msg
    job: Job
    attempt: int
    request_id: str | None


DependencyCheck = Callable[[], Awaitable[None]]
"""Raises while a dependency (S3, NATS) does not answer: the worker's readiness."""


def backoff_delays(initial: float, maximum: float) -> list[float]:
    """Pauses between probes of a failed dependency: doubling from initial up to maximum (the
    last one repeats)."""
    if initial >= maximum:
        return [maximum]
    delays = [initial]
    while delays[-1] * 2 < maximum:
        delays.append(delays[-1] * 2)
    delays.append(maximum)
    return delays


def consumer_config(config: IntakeConfig) -> ConsumerConfig:
    subjects = list(config.filter_subjects)
    return ConsumerConfig(
        name=config.consumer_name,
        durable_name=config.consumer_name,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=config.ack_wait_seconds,
        max_deliver=config.max_deliver,
        filter_subject=subjects[0] if len(subjects) == 1 else None,
        filter_subjects=subjects if len(subjects) > 1 else None,
        max_ack_pending=-1,
    )


class NatsNotifier:
    """The worker's nudge to the watcher, on core NATS: lost if nobody listens, which is fine,
    as the watcher polls S3 anyway."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc

    async def worker_started(self, project: str, version: int) -> None:
        event = events_pb2.WorkerStarted(project=project, version=version)
        await self._nc.publish(messaging.worker_started_subject(project), messaging.encode(event))

    async def worker_finished(self, project: str, version: int) -> None:
        event = events_pb2.WorkerFinished(project=project, version=version)
        await self._nc.publish(messaging.worker_finished_subject(project), messaging.encode(event))


JobObserver = Callable[[str, str, float | None, int], None]
"""Told (outcome, exit reason, seconds run, attempt) once per delivery (worker metrics)."""


class _Slot:
    """A job's hold on one of the intake's slots, given back once: when FreeCAD is done, or
    when the job ends, whichever comes first."""

    def __init__(self, on_free: Callable[[], None]) -> None:
        self._on_free: Callable[[], None] | None = on_free

    def free(self) -> None:
        if self._on_free is not None:
            on_free, self._on_free = self._on_free, None
            on_free()


class Intake:
    def __init__(
        self,
        js: JetStreamContext,
        config: IntakeConfig,
        service: JobService,
        *,
        dependencies: DependencyCheck | None = None,
        on_job: JobObserver = lambda outcome, reason, seconds, attempt: None,
    ) -> None:
        self._js = js
        self._config = config
        self._service = service
        self._dependencies = dependencies
        self._on_job = on_job
        self._stopping = asyncio.Event()
        # one wake-up per waiting loop, so that neither clears the other's news
        self._fetch_wake = asyncio.Event()
        self._dispatch_wake = asyncio.Event()
        self._healthy = asyncio.Event()
        self._healthy.set()
        self._waiting: FairQueue[Delivery] = FairQueue(
            fair=config.fair, per_owner_cap=config.per_owner_cap
        )
        self._running: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[None]] = set()
        self._slots_taken = 0
        """Jobs holding a slot: those in self._jobs that have not yet said FreeCAD is done."""
        self._recovering: asyncio.Task[None] | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._request_expires = 0.0
        """time.monotonic() at which JetStream forgets our last pull request."""
        self._stopped_jobs: list[Msg] = []
        """Messages of jobs the shutdown stopped, to hand back (stop)."""

    async def start(self) -> None:
        # Create the durable, or bring an existing one to this configuration (ack_wait,
        # max_deliver and the filter may change between releases).
        await self._js.add_consumer(messaging.SCRIPTS_STREAM, consumer_config(self._config))
        subscription = await self._js.pull_subscribe_bind(
            durable=self._config.consumer_name, stream=messaging.SCRIPTS_STREAM
        )
        self._subscription = subscription
        self._tasks = [
            asyncio.create_task(self._fetch_forever(subscription), name="worker-fetch"),
            asyncio.create_task(self._dispatch_forever(), name="worker-dispatch"),
            asyncio.create_task(self._keep_waiting_alive(), name="worker-waiting-heartbeat"),
        ]
        logger.info(
            "taking jobs from %s (consumer %s, %d running FreeCAD at a time, %d in flight, %s, "
            "buffer %d)",
            ", ".join(self._config.filter_subjects),
            self._config.consumer_name,
            self._config.concurrency,
            self._config.in_flight,
            "owners in turn" if self._config.fair else "first come first served",
            self._config.buffer,
        )

    @property
    def busy(self) -> int:
        return len(self._jobs)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def taking_work(self) -> bool:
        """False while a dependency is down (the intake probes it with back-off)."""
        return self._healthy.is_set()

    async def stop(self, drain_timeout: float) -> None:
        """Stops fetching at once and hands waiting messages back (nak); running jobs get
        drain_timeout seconds to finish, then are killed and handed back for another worker.

        What is handed back while JetStream still holds our last pull request (up to
        fetch_timeout after it was sent) would be delivered to that request, here, where nobody
        takes it any more (and NATS's drain would wait for it): so a hand-back waits for the
        request to expire (jobs run, or are killed at their deadline, meanwhile)."""
        self._stopping.set()
        self._notify()
        if self._recovering is not None:
            self._recovering.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        waiting = [w.item.message for w in self._waiting.drain()]
        handing_back = asyncio.create_task(self._hand_back(waiting))
        if self._jobs:
            logger.info("waiting up to %.0f s for %d job(s)", drain_timeout, len(self._jobs))
            _, late = await asyncio.wait(set(self._jobs), timeout=drain_timeout)
            for job in late:
                job.cancel()  # the sandbox is killed now; the message is handed back below
            await asyncio.gather(*late, return_exceptions=True)
        await handing_back
        await self._hand_back(self._stopped_jobs)
        if self._subscription is not None:
            # a message that still reached us is never acked and comes back after ack_wait
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def _hand_back(self, messages: list[Msg]) -> None:
        """nak, once JetStream has forgotten our last pull request."""
        if not messages:
            return
        await asyncio.sleep(max(0.0, self._request_expires - time.monotonic()))
        for message in messages:
            with contextlib.suppress(Exception):
                await message.nak()

    # --- fetching ------------------------------------------------------------------------

    async def _fetch_forever(self, subscription: JetStreamContext.PullSubscription) -> None:
        stop = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                room = self._config.buffer - len(self._waiting) - len(self._jobs)
                if room <= 0 or not self._healthy.is_set():
                    await self._wait_for(self._fetch_wake)
                    continue
                self._request_expires = time.monotonic() + self._config.fetch_timeout_seconds
                fetch = asyncio.create_task(
                    subscription.fetch(room, timeout=self._config.fetch_timeout_seconds)
                )
                await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    # A message the cancelled request may still bring in is never acked, and
                    # comes back after ack_wait: nothing is lost.
                    fetch.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await fetch
                    break
                try:
                    messages = fetch.result()
                except TimeoutError:  # nothing to fetch: nats-py's TimeoutError or asyncio's
                    continue
                except Exception as error:  # NATS away: probe it with back-off
                    self.dependency_failed(f"fetching jobs failed: {error!r}")
                    continue
                for message in messages:
                    await self._accept(message)
                self._notify()
        finally:
            stop.cancel()
            # A pull subscription whose fetch was cancelled holds an unfinished message in
            # its queue, and the connection's drain would wait for it until the drain timeout
            # (30 s by default); this slot's jobs are finished, so nothing is lost here.
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await subscription.unsubscribe()

    def _notify(self) -> None:
        """Something changed (work arrived or ended, a dependency came back, stopping)."""
        self._fetch_wake.set()
        self._dispatch_wake.set()

    async def _wait_for(self, wake: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), self._config.fetch_timeout_seconds)
        wake.clear()

    async def _accept(self, message: Msg) -> None:
        attempt = message.metadata.num_delivered
        try:
            event = messaging.decode(message.data, events_pb2.ScriptUploaded)
            job = job_from_event(event.project, event.version, event.key, event.sha256)
        except (ParseError, InvalidJob) as error:
            logger.error("dropping an uploaded event that names no script: %s", error)
            self._on_job("dropped", "", None, attempt)
            with contextlib.suppress(Exception):
                await message.term()
            return
        request_id = (message.headers or {}).get("X-Request-Id")
        self._waiting.add(event.owner, Delivery(message, job, attempt, request_id))

    async def _keep_waiting_alive(self) -> None:
        """Waiting messages are in progress too: without a beat they would be redelivered
        after ack_wait, to this or another worker, while they wait their turn here."""
        interval = max(0.2, self._config.ack_wait_seconds / 3)
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)
                return
            for waiting in list(self._waiting):
                try:
                    await waiting.item.message.in_progress()
                except Exception as error:  # the next beat may get through
                    logger.debug("heartbeat of a waiting job failed: %s", error)

    # --- dispatching ---------------------------------------------------------------------

    async def _dispatch_forever(self) -> None:
        while not self._stopping.is_set():
            while (
                self._healthy.is_set()
                and not self._stopping.is_set()
                and self._slots_taken < self._config.concurrency
                and len(self._jobs) < self._config.in_flight
            ):
                waiting = self._waiting.take(self._running)
                if waiting is None:
                    break
                self._running[waiting.owner] += 1
                self._slots_taken += 1
                slot = _Slot(self._slot_freed)
                task = asyncio.create_task(self._process(waiting, slot.free))
                self._jobs.add(task)
                task.add_done_callback(functools.partial(self._job_done, waiting, slot))
            await self._wait_for(self._dispatch_wake)

    def _slot_freed(self) -> None:
        self._slots_taken -= 1
        self._notify()

    def _job_done(self, waiting: Waiting[Delivery], slot: _Slot, task: asyncio.Task[None]) -> None:
        slot.free()
        self._jobs.discard(task)
        self._running[waiting.owner] -= 1
        if self._running[waiting.owner] <= 0:
            del self._running[waiting.owner]
        if not task.cancelled() and task.exception() is not None:
            logger.error("a job ended with an unexpected error", exc_info=task.exception())
        self._notify()

    # --- outages -------------------------------------------------------------------------

    def dependency_failed(self, why: str) -> None:
        """Stop taking work and probe the dependencies with back-off until they answer (told by
        a job or a fetch that failed, and by the worker's readiness check)."""
        if not self._healthy.is_set() or self._stopping.is_set():
            return
        logger.warning("%s; taking no work until S3 and NATS answer again", why)
        self._healthy.clear()
        self._recovering = asyncio.create_task(self._recover(), name="worker-recover")

    async def _recover(self) -> None:
        delays = backoff_delays(
            self._config.backoff_initial_seconds, self._config.backoff_max_seconds
        )
        probes = 0
        while not self._stopping.is_set():
            await asyncio.sleep(delays[min(probes, len(delays) - 1)])
            probes += 1
            try:
                if self._dependencies is not None:
                    await self._dependencies()
            except Exception as error:  # still down: wait longer
                logger.info("dependencies still down (probe %d): %s", probes, error)
                continue
            logger.info("dependencies answer again after %d probe(s); taking work", probes)
            self._healthy.set()
            self._notify()
            return

    # --- one job -------------------------------------------------------------------------

    async def _process(self, waiting: Waiting[Delivery], free_slot: Callable[[], None]) -> None:
        delivery = waiting.item
        job, message, attempt = delivery.job, delivery.message, delivery.attempt
        # every line about this job carries the upload's request id and the version
        with log_context(
            request_id=delivery.request_id,
            project=job.project,
            version=job.version,
            attempt=attempt,
        ):
            heartbeat = asyncio.create_task(self._heartbeat(message))
            try:
                marker = await self._service.handle(job, attempt, core_done=free_slot)
            except ScriptMissing as error:
                logger.error("dropping the event of %s: %s", job.name, error)
                self._on_job("dropped", "", None, attempt)
                with contextlib.suppress(Exception):
                    await message.term()
                return
            except NeverToRun as error:
                logger.warning("%s is not run: %s", job.name, error)
                self._on_job("expired", "", None, attempt)
                await self._ack(message, job)
                return
            except asyncio.CancelledError:
                logger.warning("%s was stopped by the worker's shutdown; handing it back", job.name)
                self._on_job("handed_back", "", None, attempt)
                self._stopped_jobs.append(message)
                raise
            except errors.Unavailable as error:
                # An outage is no fault of the script: the job waits here, its delivery
                # unspent, and runs again once the dependencies answer.
                self._on_job("held", "", None, attempt)
                self._waiting.put_back(waiting)
                self.dependency_failed(f"{job.name} could not be finished ({error})")
                return
            except Exception:
                logger.exception("%s could not be finished; it will be delivered again", job.name)
                self._on_job("retry", "", None, attempt)
                with contextlib.suppress(Exception):
                    await message.nak(delay=min(2.0 * attempt, 30.0))
                return
            finally:
                heartbeat.cancel()
            if marker is None:
                self._on_job("already_finished", "", None, attempt)
            else:
                self._on_job(marker.status, marker.exit_reason, marker.duration_seconds, attempt)
            await self._ack(message, job)

    async def _ack(self, message: Msg, job: Job) -> None:
        """An ack NATS does not take is tried again once NATS answers (within ack_wait, while
        the ack still counts); failing that, the version is redelivered and acked as finished."""
        for retry in (False, True):
            try:
                await message.ack()
                return
            except Exception as error:
                if retry or self._stopping.is_set():
                    logger.warning("could not acknowledge %s: %s", job.name, error)
                    return
                self.dependency_failed(f"could not acknowledge {job.name}: {error}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._healthy.wait(), self._config.ack_wait_seconds)

    async def _heartbeat(self, message: Msg) -> None:
        interval = max(0.2, self._config.ack_wait_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await message.in_progress()
            except Exception as error:  # the next beat may get through
                logger.debug("heartbeat failed: %s", error)
