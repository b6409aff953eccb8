"""Group commit: concurrent callers' items written together, one request for many.

Uploads finishing at the same moment each need their version document and outbox entry
written. Instead of a MongoDB round trip (and a thread hop) per upload, the first caller writes
every item waiting at that moment; callers that arrive while a write is under way wait for it
and are written together by the next one. A caller returns once its own item is written (or
its batch failed: then it gets the batch's error and may retry). Nothing waits for a timer:
with no concurrency a batch is a single item, written at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")


class GroupCommit(Generic[Item]):
    def __init__(
        self, write: Callable[[Sequence[Item]], Awaitable[None]], *, max_batch: int = 256
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._waiting: list[tuple[Item, asyncio.Future[None]]] = []
        self._writing = False
        self._written = asyncio.Event()
        """Set, and replaced, at the end of each write."""

    async def submit(self, item: Item) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        while not done.done():
            if self._writing:
                ended = self._written
                await ended.wait()
                continue
            await self._write_waiting()
        done.result()

    async def _write_waiting(self) -> None:
        batch = self._waiting[: self._max_batch]
        del self._waiting[: self._max_batch]
        self._writing = True
        try:
            await self._write([item for item, _ in batch])
        except Exception as error:
            for _, done in batch:
                done.set_exception(error)
        except BaseException:  # cancelled: not known to be written; the next writer takes it
            self._waiting[:0] = batch
            raise
        else:
            for _, done in batch:
                done.set_result(None)
        finally:
            self._writing = False
            ended, self._written = self._written, asyncio.Event()
            ended.set()
