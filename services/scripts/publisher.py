"""The outbox publisher: sends the uploaded events recorded in MongoDB to JetStream.

Each entry is published with its Nats-Msg-Id and marked sent only after JetStream's ack, so an
event is never lost; a repeat (a retry, two replicas publishing the same entry) is dropped by
the stream's duplicate window. The publisher wakes at once when an upload records an entry and
publishes the entry it is handed (the usual path: the event is on the wire a millisecond after
the upload); every `poll_interval`, and after any failure, it reads the pending entries from
the outbox instead, which also picks up entries other replicas left behind. It backs off while
NATS is away.

It owns its NATS connection: connecting waits for NATS for as long as it takes, while uploads
keep working, and the streams are ensured on every (re)connection, since a NATS that lost its
store comes back without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from cadpipe import errors, messaging
from cadpipe.settings import NatsSettings
from services.scripts.domain import OutboxEntry
from services.scripts.ports import OutboxFeed

logger = logging.getLogger(__name__)

StateCallback = Callable[[bool], Awaitable[None]]
"""Told True when events flow (connected, last batch acknowledged), False when they do not."""

_PUBLISH_ERRORS = (nats.errors.Error, asyncio.TimeoutError, OSError)


async def _ignore_state(_: bool) -> None:
    return None


class OutboxPublisher:
    def __init__(
        self,
        feed: OutboxFeed,
        nats_settings: NatsSettings,
        *,
        poll_interval: float = 1.0,
        max_backoff: float = 5.0,
        publish_timeout: float = 2.0,
        batch_size: int = 256,
        on_state: StateCallback = _ignore_state,
        on_published: Callable[[int], None] = lambda count: None,
        error_cb: Callable[[Exception], Awaitable[None]] | None = None,
    ) -> None:
        self._feed = feed
        self._settings = nats_settings
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._publish_timeout = publish_timeout
        self._batch_size = batch_size
        self._on_state = on_state
        self._on_published = on_published
        self._error_cb = error_cb
        self._wake = asyncio.Event()
        self._retry_now = asyncio.Event()
        """Ends a backoff early: NATS is back, or the service stops."""
        self._stopping = False
        self._streams_ready = False
        self._nc: NatsClient | None = None
        self._fresh: list[OutboxEntry] = []
        self.connected = asyncio.Event()
        """Set once the first connection is up and the streams are ensured."""
        self.published = 0

    def wake(self, entry: OutboxEntry | None = None) -> None:
        """Called after an upload recorded its entry, which is handed over so that the usual
        path publishes it without reading the outbox back."""
        if entry is not None:
            self._fresh.append(entry)
        self._wake.set()

    async def run(self) -> None:
        self._nc = await messaging.connect(
            self._settings,
            name="cadpipe-scripts",
            reconnected_cb=self._reconnected,
            disconnected_cb=self._disconnected,
            **({"error_cb": self._error_cb} if self._error_cb else {}),
        )
        js = self._nc.jetstream()
        logger.info("connected to NATS at %s", self._settings.nats_url)
        backoff = 0.0
        next_scan = 0.0  # the outbox is read at start, every poll_interval, and after failures
        while not self._stopping:
            self._wake.clear()
            fresh, self._fresh = self._fresh, []
            try:
                if not self._streams_ready:
                    await messaging.ensure_streams(js, replicas=self._settings.nats_stream_replicas)
                    self._streams_ready = True
                    self.connected.set()
                if time.monotonic() >= next_scan:
                    # fresh entries are in the outbox already: the scan covers them
                    more = await self._publish_batch(js, await self._feed.pending(self._batch_size))
                    next_scan = 0.0 if more else time.monotonic() + self._poll_interval
                else:
                    await self._publish_batch(js, fresh)
            except Exception as error:  # logged; the loop must outlive any failure
                backoff = min(max(backoff * 2, 0.1), self._max_backoff)
                next_scan = 0.0  # what failed is still pending in the outbox
                if isinstance(error, (*_PUBLISH_ERRORS, errors.Unavailable)):
                    logger.warning("events not published (%s); retrying in %.1fs", error, backoff)
                else:
                    logger.exception("outbox publisher failed; retrying in %.1fs", backoff)
                await self._on_state(False)
                # uploads do not cut a backoff short: their entries wait in the outbox
                self._retry_now.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._retry_now.wait(), backoff)
                continue
            if backoff:
                logger.info("events flow again")
                backoff = 0.0
            await self._on_state(True)
            await self._sleep_or_wake(max(0.0, next_scan - time.monotonic()))
        await self._last_batch(js)

    async def _last_batch(self, js: JetStreamContext) -> None:
        """At shutdown, what the last uploads recorded goes out now rather than at another
        replica's next scan (or this one's restart)."""
        if not self._streams_ready or self._nc is None or not self._nc.is_connected:
            return
        try:
            await self._publish_batch(js, await self._feed.pending(self._batch_size))
        except Exception as error:  # the entries stay in the outbox for the next publisher
            logger.warning("events left in the outbox at shutdown: %s", error)

    async def _publish_batch(self, js: JetStreamContext, entries: list[OutboxEntry]) -> bool:
        """Publishes entries, marks the acknowledged ones sent; True when the batch was full."""
        if not entries:
            return False
        results = await asyncio.gather(
            *(self._publish(js, entry) for entry in entries), return_exceptions=True
        )
        sent = [e.msg_id for e, r in zip(entries, results, strict=True) if r is None]
        failures = [r for r in results if r is not None]
        if sent:
            await self._feed.mark_sent(sent)
            self.published += len(sent)
            self._on_published(len(sent))
        if failures:
            failed = [e.msg_id for e, r in zip(entries, results, strict=True) if r is not None]
            await self._feed.note_failure(failed, repr(failures[0]))
            raise failures[0]
        return len(entries) == self._batch_size

    async def _publish(self, js: JetStreamContext, entry: OutboxEntry) -> None:
        if self._nc is None or not self._nc.is_connected:
            # nats-py would buffer the message until it reconnects; the outbox already does
            raise errors.Unavailable("NATS is not connected")
        ack = await js.publish(
            entry.subject,
            entry.payload,
            timeout=self._publish_timeout,
            headers=_headers(entry),
        )
        if ack.duplicate:
            logger.debug("event %s was already in the stream", entry.msg_id)

    async def _sleep_or_wake(self, seconds: float) -> None:
        if self._fresh or self._stopping:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    async def _reconnected(self) -> None:
        logger.info("reconnected to NATS")
        self._streams_ready = False
        self._retry_now.set()
        self._wake.set()

    async def _disconnected(self) -> None:
        if not self._stopping:
            logger.warning("disconnected from NATS; uploads go on, their events wait in the outbox")

    async def stop(self, task: asyncio.Task[None], grace: float = 2.0) -> None:
        """Ends the loop (after its current batch, at most `grace` seconds), then drains."""
        self._stopping = True
        self._retry_now.set()
        self._wake.set()
        if self._nc is None:  # still waiting for NATS: nothing to finish
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        else:
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            except Exception:
                logger.exception("the outbox publisher failed")
        if self._nc is not None:
            await messaging.close(self._nc)


def _headers(entry: OutboxEntry) -> dict[str, str]:
    headers = {"Nats-Msg-Id": entry.msg_id}
    if entry.request_id:
        headers["X-Request-Id"] = entry.request_id
    return headers
