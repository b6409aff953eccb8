"""The worker's intake order (services/worker/domain/fairness.py) and its back-off, pure."""

from __future__ import annotations

import pytest

from services.worker.domain.fairness import FairQueue
from services.worker.intake import backoff_delays


def take_all(queue: FairQueue[str], running: dict[str, int] | None = None) -> list[str]:
    taken = []
    while (waiting := queue.take(running or {})) is not None:
        taken.append(waiting.item)
    return taken


def test_owners_take_turns_and_each_owner_keeps_its_order() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(1, 5):
        queue.add("flood", f"a{i}")
    queue.add("other", "b1")
    queue.add("other", "b2")
    queue.add("third", "c1")
    assert take_all(queue) == ["a1", "b1", "c1", "a2", "b2", "a3", "a4"]
    assert len(queue) == 0


def test_a_late_owner_waits_for_one_job_of_the_flood_only() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(1, 51):
        queue.add("flood", f"a{i}")
    first = queue.take({})
    assert first is not None and first.item == "a1"
    queue.add("other", "b1")  # arrives while a1 runs
    nxt = queue.take({"flood": 1})
    assert nxt is not None and nxt.item == "b1"


def test_without_fairness_the_oldest_goes_first() -> None:
    queue: FairQueue[str] = FairQueue(fair=False)
    for i in range(1, 4):
        queue.add("flood", f"a{i}")
    queue.add("other", "b1")
    queue.add("flood", "a4")
    assert take_all(queue) == ["a1", "a2", "a3", "b1", "a4"]


def test_the_cap_holds_an_owner_back_while_others_may_run() -> None:
    queue: FairQueue[str] = FairQueue(per_owner_cap=2)
    for i in range(1, 4):
        queue.add("flood", f"a{i}")
    assert queue.take({"flood": 2}) is None  # capped, nobody else waits
    queue.add("other", "b1")
    taken = queue.take({"flood": 2})
    assert taken is not None and taken.item == "b1"
    again = queue.take({"flood": 1, "other": 1})
    assert again is not None and again.item == "a1"


def test_a_job_put_back_keeps_its_place() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.add("a", "a1")
    queue.add("a", "a2")
    queue.add("b", "b1")
    taken = queue.take({})
    assert taken is not None and taken.item == "a1"
    queue.put_back(taken)
    assert take_all(queue) == ["a1", "b1", "a2"]


def test_drain_hands_back_everything_in_arrival_order() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.add("a", "a1")
    queue.add("b", "b1")
    queue.add("a", "a2")
    assert [w.item for w in queue.drain()] == ["a1", "b1", "a2"]
    assert queue.take({}) is None


def test_a_negative_cap_is_refused() -> None:
    with pytest.raises(ValueError):
        FairQueue(per_owner_cap=-1)


def test_probes_of_a_failed_dependency_back_off_exponentially() -> None:
    assert backoff_delays(0.5, 8.0) == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert backoff_delays(0.5, 3.0) == [0.5, 1.0, 2.0, 3.0]
    assert backoff_delays(2.0, 1.0) == [1.0]
