"""Which waiting job a free slot takes: round-robin between the owners with work waiting, a cap
on each owner's running jobs, first come first served within one owner. Pure; no I/O.

With fairness on, an owner who uploads a flood takes one free slot in turn with every other
owner who has work waiting, so the others wait at most for one job per slot, not for the flood.
With fairness off (for comparison, e.g. bench/fairness.py), the oldest waiting job goes first,
whoever owns it: the order of the stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Waiting(Generic[T]):
    owner: str
    item: T
    arrival: int
    """Order of arrival in this queue (handed-back items keep theirs)."""


class FairQueue(Generic[T]):
    """Owners are served least recently served first (an owner never served, or not for
    longest, goes next; ties by the age of their oldest job)."""

    MAX_REMEMBERED_OWNERS = 10_000

    def __init__(self, *, fair: bool = True, per_owner_cap: int = 0) -> None:
        """per_owner_cap: most jobs of one owner running at once; 0: no cap."""
        if per_owner_cap < 0:
            raise ValueError("per_owner_cap must be 0 (no cap) or more")
        self.fair = fair
        self.per_owner_cap = per_owner_cap
        self._queues: dict[str, deque[Waiting[T]]] = {}
        self._served: dict[str, int] = {}  # owner -> turn of its last service
        self._before: dict[str, int] = {}  # owner -> its turn before the last take
        self._turns = 0
        self._arrivals = 0

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def __iter__(self) -> Iterator[Waiting[T]]:
        for queue in self._queues.values():
            yield from queue

    def add(self, owner: str, item: T) -> None:
        """A new job at the back of its owner's queue."""
        self._arrivals += 1
        self._queues.setdefault(owner, deque()).append(Waiting(owner, item, self._arrivals))

    def put_back(self, waiting: Waiting[T]) -> None:
        """A job taken and not run (its dependencies failed) goes back where it was: first of
        its owner's queue, its owner's turn not spent."""
        self._queues.setdefault(waiting.owner, deque()).appendleft(waiting)
        if waiting.owner in self._before:
            self._served[waiting.owner] = self._before.pop(waiting.owner)

    def take(self, running: Mapping[str, int]) -> Waiting[T] | None:
        """The job the next free slot runs, or None when nothing waiting may run now.
        running: jobs running now, by owner."""
        heads = [q[0] for q in self._queues.values()]
        if self.fair:
            if self.per_owner_cap:
                heads = [w for w in heads if running.get(w.owner, 0) < self.per_owner_cap]
            chosen = min(
                heads, key=lambda w: (self._served.get(w.owner, 0), w.arrival), default=None
            )
        else:
            chosen = min(heads, key=lambda w: w.arrival, default=None)
        if chosen is None:
            return None
        queue = self._queues[chosen.owner]
        queue.popleft()
        if not queue:
            del self._queues[chosen.owner]
        self._turns += 1
        self._before[chosen.owner] = self._served.get(chosen.owner, 0)
        self._served[chosen.owner] = self._turns
        self._forget_idle_owners()
        return chosen

    def drain(self) -> list[Waiting[T]]:
        """Everything waiting, in arrival order; the queue is left empty."""
        everything = sorted(self, key=lambda w: w.arrival)
        self._queues.clear()
        return everything

    def _forget_idle_owners(self) -> None:
        if len(self._served) > self.MAX_REMEMBERED_OWNERS:
            for owner in [o for o in self._served if o not in self._queues]:
                del self._served[owner]
                self._before.pop(owner, None)
