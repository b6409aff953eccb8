"""The watcher on NATS, over one connection:

* consumes uploaded events (stream CADPIPE_SCRIPTS) with a durable pull consumer that every
  replica shares, so each event reaches one replica; an event is acked once its job is stored;
* publishes JobFinished on JetStream, cadpipe.jobs.{outcome}.{project}, with the version's
  Nats-Msg-Id, so a repeat within the stream's duplicate window is dropped;
* listens (core NATS) to the worker's nudges, cadpipe.worker.started.> and
  cadpipe.worker.finished.>, to check a version early (a start also feeds the status streams);
* listens (core NATS) to every replica's uploaded and completion events to feed the WatchStatus
  streams served here: a version another replica decides still reaches this replica's watchers;
  and to the generator's GenerationUpdated, merged into the same streams.

Subjects, streams and encoding come from cadpipe.messaging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cadpipe import layout, messaging
from cadpipe.logs import log_context
from cadpipe.settings import NatsSettings
from cadpipe.v1 import events_pb2, status_pb2
from services.watcher import messages

logger = logging.getLogger(__name__)

UploadHandler = Callable[[events_pb2.ScriptUploaded], Awaitable[None]]
NudgeHandler = Callable[[str, int, bool], None]
"""(project, version, finished): a worker finished the version, or (False) started it."""
StatusHandler = Callable[[status_pb2.ProjectStatus], None]

ACK_WAIT_SECONDS = 30.0
FETCH_BATCH = 64
FETCH_TIMEOUT_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 5.0
DRAIN_TIMEOUT_SECONDS = 5.0


class NatsEvents:
    def __init__(
        self,
        settings: NatsSettings,
        *,
        durable: str,
        publish_timeout: float = 2.0,
        name: str = "cadpipe-watcher",
        error_cb: Callable[[Exception], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        self._durable = durable
        self._publish_timeout = publish_timeout
        self._name = name
        self._error_cb = error_cb
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._pull: JetStreamContext.PullSubscription | None = None
        self._closing = False

    async def connect(self, *, on_nudge: NudgeHandler, on_status: StatusHandler) -> None:
        """Connects (raising when NATS does not answer), ensures the streams and the consumer,
        and subscribes to the nudge and the status feed. Core subscriptions are restored by the
        client after a reconnection."""
        self._nc = await messaging.connect(
            self._settings,
            name=self._name,
            disconnected_cb=self._disconnected,
            reconnected_cb=self._reconnected,
            drain_timeout=DRAIN_TIMEOUT_SECONDS,
            **({"error_cb": self._error_cb} if self._error_cb else {}),
        )
        self._js = self._nc.jetstream()
        await self._setup_consumer()

        async def nudged(msg: Msg) -> None:
            try:
                event = messaging.decode(msg.data, events_pb2.WorkerFinished)
            except Exception as error:  # a malformed nudge is only logged
                logger.warning("ignored a malformed nudge on %s: %s", msg.subject, error)
                return
            on_nudge(event.project, event.version, True)

        async def started(msg: Msg) -> None:
            try:
                event = messaging.decode(msg.data, events_pb2.WorkerStarted)
                layout.check_project(event.project)
            except Exception as error:  # a malformed nudge is only logged
                logger.warning("ignored a malformed nudge on %s: %s", msg.subject, error)
                return
            on_nudge(event.project, event.version, False)
            on_status(messages.status_from_started(event))

        async def uploaded(msg: Msg) -> None:
            try:
                event = messaging.decode(msg.data, events_pb2.ScriptUploaded)
            except Exception:  # the consumer logs malformed events
                return
            on_status(messages.status_from_uploaded(event))

        async def finished(msg: Msg) -> None:
            try:
                event = messaging.decode(msg.data, events_pb2.JobFinished)
            except Exception as error:  # a malformed event is only logged
                logger.warning("ignored a malformed completion event: %s", error)
                return
            on_status(messages.status_from_finished(event))

        async def generation(msg: Msg) -> None:
            try:
                update = messaging.decode(msg.data, events_pb2.GenerationUpdated)
                layout.check_project(update.generation.project)
            except Exception as error:  # a malformed update is only logged
                logger.warning("ignored a malformed generation update: %s", error)
                return
            on_status(messages.status_from_generation(update))

        await self._nc.subscribe(messaging.WORKER_FINISHED_SUBJECTS, cb=nudged)
        await self._nc.subscribe(messaging.WORKER_STARTED_SUBJECTS, cb=started)
        await self._nc.subscribe(messaging.GENERATION_SUBJECTS, cb=generation)
        await self._nc.subscribe(messaging.UPLOADED_SUBJECTS, cb=uploaded)
        await self._nc.subscribe(messaging.JOB_SUBJECTS, cb=finished)
        await self._nc.flush()
        logger.info("connected to NATS at %s", self._settings.nats_url)

    async def _setup_consumer(self) -> None:
        assert self._js is not None
        await messaging.ensure_streams(self._js, replicas=self._settings.nats_stream_replicas)
        self._pull = await self._js.pull_subscribe(
            messaging.UPLOADED_SUBJECTS,
            durable=self._durable,
            stream=messaging.SCRIPTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                # Every upload still in the stream is a version someone is waiting for; the
                # job upsert makes the ones already known harmless.
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ACK_WAIT_SECONDS,
                max_ack_pending=1000,
            ),
        )

    async def consume_forever(self, on_uploaded: UploadHandler) -> None:
        """Hands each uploaded event to on_uploaded and acks it after the handler returned; a
        handler failure naks it for a later redelivery. Runs until cancelled."""
        backoff = 0.0
        while True:
            try:
                if self._pull is None:
                    await self._setup_consumer()
                assert self._pull is not None
                messages = await self._pull.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT_SECONDS)
            except TimeoutError:
                continue
            except (nats.errors.Error, OSError) as error:
                # Among others: NATS came back without its store, and the stream or the
                # consumer is gone. Set them up again.
                backoff = min(max(backoff * 2, 0.1), MAX_BACKOFF_SECONDS)
                logger.warning(
                    "uploaded events not consumed (%s); retrying in %.1fs", error, backoff
                )
                self._pull = None
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            await asyncio.gather(*(self._handle(msg, on_uploaded) for msg in messages))

    async def _handle(self, msg: Msg, on_uploaded: UploadHandler) -> None:
        try:
            event = messaging.decode(msg.data, events_pb2.ScriptUploaded)
            layout.check_project(event.project)
            if event.version < 1:
                raise ValueError(f"version {event.version}")
        except Exception as error:  # a malformed event can never succeed
            logger.error("dropped a malformed uploaded event on %s: %s", msg.subject, error)
            await msg.term()
            return
        # the upload's request id (set by the script service) on every line about this event
        with log_context(
            request_id=(msg.headers or {}).get("X-Request-Id"),
            project=event.project,
            version=event.version,
        ):
            try:
                await on_uploaded(event)
            except Exception as error:  # redelivered later
                logger.warning(
                    "uploaded event of %s v%d not stored (%s); redelivered later",
                    event.project,
                    event.version,
                    error,
                )
                await _quietly(msg.nak(delay=1.0))
                return
            await _quietly(msg.ack())

    @property
    def jetstream(self) -> JetStreamContext:
        """For read-only views (monitoring: stream and consumer info)."""
        if self._js is None:
            raise nats.errors.ConnectionClosedError()
        return self._js

    async def publish_finished(self, event: events_pb2.JobFinished) -> None:
        if self._js is None:
            raise nats.errors.ConnectionClosedError()
        await self._js.publish(
            messaging.job_subject(event.status, event.project),
            messaging.encode(event),
            timeout=self._publish_timeout,
            headers={"Nats-Msg-Id": messaging.job_msg_id(event.project, event.version)},
        )

    async def check(self) -> None:
        """Raises unless NATS answers."""
        if self._nc is None or not self._nc.is_connected:
            raise ConnectionError("NATS is not connected")
        await self._nc.flush(timeout=2)

    async def close(self) -> None:
        self._closing = True
        if self._nc is None or self._nc.is_closed:
            return
        if self._pull is not None:
            # A pull subscription whose fetch was cancelled would hold the drain until its
            # timeout; nothing is in flight on it once consuming stopped.
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await self._pull.unsubscribe()
            self._pull = None
        await messaging.close(self._nc)

    async def _disconnected(self) -> None:
        if not self._closing:
            logger.warning("disconnected from NATS")

    async def _reconnected(self) -> None:
        logger.info("reconnected to NATS")


async def _quietly(ack: Awaitable[Any]) -> None:
    # An ack lost to a disconnection only means a redelivery, which the job upsert absorbs.
    try:
        await ack
    except (nats.errors.Error, OSError) as error:
        logger.warning("ack not sent: %s", error)
