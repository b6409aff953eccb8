"""The generator on NATS, over one connection:

* publishes each stored change of a generation as GenerationUpdated on JetStream,
  cadpipe.generations.{project}, Nats-Msg-Id {id}.{sequence} (a repeat is dropped);
* learns that a version finished from the completion events, cadpipe.jobs.>, with a core
  subscription that wakes the generation waiting for that version.

Why the completion events and not WatchStatus: WatchStatus follows a project's latest version,
and with two generations on one project the other one's later version hides ours (its de-dup
drops news of older versions). The events name every version. An event can still be missed
(published before the wait began, after a restart, or while NATS was away), so every wait also
asks the watcher for that version's status (GetStatus) when it starts and then every
`poll_seconds`: the event is the fast path, the status the floor, as in the watcher itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from cadpipe import errors, messaging
from cadpipe.callers import Caller
from cadpipe.settings import NatsSettings
from cadpipe.v1 import events_pb2
from services.generator.domain import Generation
from services.generator.grpc_clients import WatcherClient
from services.generator.messages import generation_message
from services.generator.ports import RunOutcome

logger = logging.getLogger(__name__)

TERMINAL = ("completed", "error", "timeout")


class NatsGenerationEvents:
    def __init__(
        self,
        settings: NatsSettings,
        *,
        publish_timeout: float = 2.0,
        error_cb: Callable[[Exception], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        self._publish_timeout = publish_timeout
        self._error_cb = error_cb
        self._nc: NatsClient | None = None
        self._waiting: dict[tuple[str, int], set[asyncio.Future[RunOutcome]]] = {}
        self.on_published: Callable[[], None] = lambda: None

    async def connect(self) -> None:
        self._nc = await messaging.connect(
            self._settings,
            name="cadpipe-generator",
            **({"error_cb": self._error_cb} if self._error_cb else {}),
        )
        js = self._nc.jetstream()
        await messaging.ensure_streams(js, replicas=self._settings.nats_stream_replicas)
        await self._nc.subscribe(messaging.JOB_SUBJECTS, cb=self._finished)
        await self._nc.flush()

    async def check(self) -> None:
        if self._nc is None or not self._nc.is_connected:
            raise ConnectionError("NATS is not connected")
        await self._nc.flush(timeout=2)

    async def close(self) -> None:
        if self._nc is not None:
            await messaging.close(self._nc)

    async def publish(self, generation: Generation) -> None:
        """Best effort: the state is stored already, and GetGeneration serves it."""
        if self._nc is None:
            return
        update = events_pb2.GenerationUpdated(
            generation=generation_message(generation), sequence=generation.sequence
        )
        try:
            await self._nc.jetstream().publish(
                messaging.generation_subject(generation.project),
                messaging.encode(update),
                timeout=self._publish_timeout,
                headers={
                    "Nats-Msg-Id": messaging.generation_msg_id(generation.id, generation.sequence)
                },
            )
            self.on_published()
        except (nats.errors.Error, OSError, TimeoutError) as error:
            logger.warning(
                "progress of generation %s not published (%s); GetGeneration has it",
                generation.id,
                error,
            )

    async def _finished(self, msg: Msg) -> None:
        try:
            event = messaging.decode(msg.data, events_pb2.JobFinished)
        except Exception:  # not ours to judge: the watcher published it
            return
        for future in self._waiting.get((event.project, event.version), set()):
            if not future.done():
                future.set_result(RunOutcome(state=event.status, error=event.error))

    async def wait_for_event(
        self,
        project: str,
        version: int,
        seconds: float,
        probe: Callable[[], Awaitable[RunOutcome | None]],
    ) -> RunOutcome:
        """Until the completion event of the version, or `probe` finds the version finished
        (asked at once and every `seconds`)."""
        key = (project, version)
        future: asyncio.Future[RunOutcome] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, set()).add(future)
        try:
            while True:
                found = await probe()
                if found is not None:
                    return found
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(future), seconds)
        finally:
            waiting = self._waiting.get(key, set())
            waiting.discard(future)
            if not waiting:
                self._waiting.pop(key, None)


class Completions:
    """ports.CompletionWaiter: the completion event, with the watcher's status as the floor."""

    def __init__(
        self, events: NatsGenerationEvents, watcher: WatcherClient, *, poll_seconds: float
    ) -> None:
        self._events = events
        self._watcher = watcher
        self._poll = poll_seconds

    async def wait(self, caller: Caller, project: str, version: int) -> RunOutcome:
        async def probe() -> RunOutcome | None:
            try:
                status = await self._watcher.status(caller, project, version)
            except errors.NotFound:  # the watcher has not recorded the upload yet
                return None
            except errors.Unavailable as error:
                logger.info("status of %s v%d not read (%s); waiting on", project, version, error)
                return None
            if status.state in TERMINAL:
                return RunOutcome(state=status.state, error=status.error)
            return None

        return await self._events.wait_for_event(project, version, self._poll, probe)
