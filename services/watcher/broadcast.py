"""In-process fan-out of status changes to WatchStatus streams, per project.

Fed by this replica's own decisions and, from NATS, by every replica's uploaded and completion
events, so that a stream served here hears of a version another replica decided. Each stream
gets a bounded queue; a stream that does not keep up loses its oldest queued updates, never
blocks the publisher (the newest status is what a watcher needs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

from cadpipe.v1 import status_pb2

logger = logging.getLogger(__name__)


class Subscription:
    def __init__(self, project: str, size: int) -> None:
        self.project = project
        self._queue: asyncio.Queue[status_pb2.ProjectStatus | None] = asyncio.Queue(size)
        self._closed = False

    def offer(self, status: status_pb2.ProjectStatus) -> None:
        if self._closed:
            return
        if self._queue.full():
            self._queue.get_nowait()
            logger.info("a status watcher of %s is slow; dropped its oldest update", self.project)
        self._queue.put_nowait(status)

    def close(self) -> None:
        """The stream ends once it has taken what is queued."""
        self._closed = True
        if not self._queue.full():
            self._queue.put_nowait(None)  # wakes a reader waiting on an empty queue

    async def __aiter__(self) -> AsyncIterator[status_pb2.ProjectStatus]:
        while not (self._closed and self._queue.empty()):
            status = await self._queue.get()
            if status is None:
                return
            yield status


class StatusBroadcast:
    def __init__(self, *, queue_size: int = 64) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[str, set[Subscription]] = {}
        self._closed = False

    @contextmanager
    def subscribe(self, project: str) -> Iterator[Subscription]:
        subscription = Subscription(project, self._queue_size)
        if self._closed:
            subscription.close()
        self._subscribers.setdefault(project, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscribers.get(project, set())
            subscribers.discard(subscription)
            if not subscribers:
                self._subscribers.pop(project, None)

    def publish(self, status: status_pb2.ProjectStatus) -> None:
        for subscription in self._subscribers.get(status.project, ()):
            subscription.offer(status)

    def close(self) -> None:
        """Ends every stream (shutdown), and every later one at once."""
        self._closed = True
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.close()

    @property
    def watching(self) -> int:
        return sum(len(s) for s in self._subscribers.values())
