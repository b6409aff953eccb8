"""Work intake: a JetStream durable pull consumer on the uploaded events, shared by every worker
replica (each message goes to one of them). A message is acknowledged only once its version is
finished in S3; while a job runs, the worker tells JetStream it is still at it, so a long job is
not redelivered, and a worker that dies stops doing so, so its job is."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from google.protobuf.json_format import ParseError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cadpipe import messaging
from cadpipe.logs import log_context
from cadpipe.v1 import events_pb2
from services.worker.domain.job import InvalidJob, Job, job_from_event
from services.worker.jobs import JobService, ScriptMissing

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntakeConfig:
    consumer_name: str
    filter_subjects: tuple[str, ...]
    ack_wait_seconds: float
    max_deliver: int
    concurrency: int
    fetch_timeout_seconds: float


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

    async def worker_finished(self, project: str, version: int) -> None:
        event = events_pb2.WorkerFinished(project=project, version=version)
        await self._nc.publish(messaging.worker_finished_subject(project), messaging.encode(event))


JobObserver = Callable[[str, str, float | None, int], None]
"""Told (outcome, exit reason, seconds run, attempt) once per delivery (worker metrics)."""


class Intake:
    def __init__(
        self,
        js: JetStreamContext,
        config: IntakeConfig,
        service: JobService,
        *,
        on_job: JobObserver = lambda outcome, reason, seconds, attempt: None,
    ) -> None:
        self._js = js
        self._config = config
        self._service = service
        self._on_job = on_job
        self._stopping = asyncio.Event()
        self._slots: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        # Create the durable, or bring an existing one to this configuration (ack_wait,
        # max_deliver and the filter may change between releases).
        await self._js.add_consumer(messaging.SCRIPTS_STREAM, consumer_config(self._config))
        for index in range(self._config.concurrency):
            subscription = await self._js.pull_subscribe_bind(
                durable=self._config.consumer_name, stream=messaging.SCRIPTS_STREAM
            )
            self._slots.append(
                asyncio.create_task(self._slot(subscription), name=f"worker-slot-{index}")
            )
        logger.info(
            "taking jobs from %s (consumer %s, %d at a time)",
            ", ".join(self._config.filter_subjects),
            self._config.consumer_name,
            self._config.concurrency,
        )

    @property
    def busy(self) -> int:
        return len(self._jobs)

    async def stop(self, drain_timeout: float) -> None:
        """Stops fetching at once; running jobs get drain_timeout seconds to finish, then are
        killed and handed back to the stream for another worker."""
        self._stopping.set()
        if self._jobs:
            logger.info("waiting up to %.0f s for %d job(s)", drain_timeout, len(self._jobs))
            _, late = await asyncio.wait(set(self._jobs), timeout=drain_timeout)
            for job in late:
                job.cancel()
        await asyncio.gather(*self._slots, return_exceptions=True)

    async def _slot(self, subscription: JetStreamContext.PullSubscription) -> None:
        stop = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                fetch = asyncio.create_task(
                    subscription.fetch(1, timeout=self._config.fetch_timeout_seconds)
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
                except nats.errors.TimeoutError:
                    continue
                except Exception as error:  # NATS away: retry after a pause
                    logger.warning("fetching jobs failed: %s", error)
                    await asyncio.sleep(1.0)
                    continue
                for message in messages:
                    # Shielded from stop(): a running job ends on its own, or on the drain
                    # timeout, never because fetching stopped.
                    job = asyncio.create_task(self._process(message))
                    self._jobs.add(job)
                    try:
                        await asyncio.shield(job)
                    except asyncio.CancelledError:
                        if not job.done():
                            raise
                    except Exception:
                        logger.exception("a job ended with an unexpected error")
                    finally:
                        self._jobs.discard(job)
        finally:
            stop.cancel()
            # A pull subscription whose fetch was cancelled holds an unfinished message in
            # its queue, and the connection's drain would wait for it until the drain timeout
            # (30 s by default); this slot's jobs are finished, so nothing is lost here.
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await subscription.unsubscribe()

    async def _process(self, message: Msg) -> None:
        attempt = message.metadata.num_delivered
        try:
            event = messaging.decode(message.data, events_pb2.ScriptUploaded)
            job = job_from_event(event.project, event.version, event.key, event.sha256)
        except (ParseError, InvalidJob) as error:
            logger.error("dropping an uploaded event that names no script: %s", error)
            self._on_job("dropped", "", None, attempt)
            await message.term()
            return
        # every line about this job carries the upload's request id and the version
        with log_context(
            request_id=(message.headers or {}).get("X-Request-Id"),
            project=job.project,
            version=job.version,
            attempt=attempt,
        ):
            await self._run(message, job, attempt)

    async def _run(self, message: Msg, job: Job, attempt: int) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(message))
        try:
            marker = await self._service.handle(job, attempt)
        except ScriptMissing as error:
            logger.error("dropping the event of %s: %s", job.name, error)
            self._on_job("dropped", "", None, attempt)
            await message.term()
            return
        except asyncio.CancelledError:
            logger.warning("%s was stopped by the worker's shutdown; handing it back", job.name)
            self._on_job("handed_back", "", None, attempt)
            with contextlib.suppress(Exception):
                await message.nak()
            raise
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
        try:
            await message.ack()
        except Exception as error:  # redelivered, then acked as finished
            logger.warning("could not acknowledge %s: %s", job.name, error)

    async def _heartbeat(self, message: Msg) -> None:
        interval = max(0.2, self._config.ack_wait_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await message.in_progress()
            except Exception as error:  # the next beat may get through
                logger.debug("heartbeat failed: %s", error)
