"""The watcher's service layer (services/watcher/watching.py) over in-memory fakes: pending
versions, decisions by compare-and-set, one event per version, the sweep, leases."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace

import pytest
from support.polling import wait_until
from watcher_fakes import LIGHT_POLL, START, FakeClock, FakeEvents, FakeJobs, FakeResults

from cadpipe import layout, started
from cadpipe.marker import Marker
from cadpipe.v1 import status_pb2
from services.watcher import domain
from services.watcher.broadcast import StatusBroadcast
from services.watcher.domain import Found, LogObject, Look, Policy, PollPolicy
from services.watcher.watching import Watcher, WatcherConfig

CONFIG = WatcherConfig(
    policy=Policy(
        timeout=dt.timedelta(seconds=600),
        error_log_grace=dt.timedelta(seconds=1),
        queue_timeout=dt.timedelta(seconds=1800),
    ),
    poll=PollPolicy(interval=0.1, max_interval=2.0, backoff_ratio=0.1),
    lease=dt.timedelta(seconds=10),
    sweep_after=dt.timedelta(seconds=5),
)
DONE = Found(marker=Marker(status="completed"))


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.jobs = FakeJobs()
        self.results = FakeResults()
        self.events = FakeEvents()
        self.statuses = StatusBroadcast()

    def watcher(self, owner: str = "w1", config: WatcherConfig = CONFIG) -> Watcher:
        return Watcher(
            self.jobs,
            self.results,
            self.events,
            self.statuses,
            config,
            owner=owner,
            clock=self.clock,
        )


async def test_an_uploaded_version_is_stored_once_as_queued_and_checked() -> None:
    world = World()
    watcher = world.watcher()
    with world.statuses.subscribe("part") as changes:
        await watcher.accept_upload("part", 1, uploaded_at=START)
        await watcher.accept_upload("part", 1, uploaded_at=START)  # a redelivery
        first = await anext(aiter(changes))
    assert (first.version, first.state) == (1, "queued")
    assert watcher.pending == {("part", 1)}
    assert [r.job.state for r in world.jobs.rows.values()] == ["queued"]

    assert await watcher.check("part", 1) is None
    assert watcher.pending == {("part", 1)} and world.results.looks == [("part", 1)]


def worker_starts(world: World, after: float, version: int = 1) -> None:
    record = started.started(START + dt.timedelta(seconds=after), worker="w/1", attempt=1)
    world.results.started[("part", version)] = record


async def test_a_workers_start_moves_the_version_to_processing() -> None:
    world = World()
    watcher = world.watcher()
    await watcher.accept_upload("part", 1, uploaded_at=START)
    world.clock.advance(30)
    worker_starts(world, after=30)
    with world.statuses.subscribe("part") as changes:
        assert await watcher.check("part", 1) is None
        status = await anext(aiter(changes))
    assert (status.state, status.started_at.ToDatetime(dt.UTC)) == (
        "processing",
        START + dt.timedelta(seconds=30),
    )
    stored = await world.jobs.get("part", 1)
    assert stored is not None and stored.state == "processing"
    assert stored.started_at == START + dt.timedelta(seconds=30)


async def test_a_version_that_never_starts_times_out_at_the_queue_limit_and_is_expired() -> None:
    world = World()
    watcher = world.watcher()
    await watcher.accept_upload("part", 1, uploaded_at=START)
    world.clock.advance(1799)
    assert await watcher.check("part", 1) is None
    world.clock.advance(2)
    decided = await watcher.check("part", 1)
    assert decided is not None
    assert (decided.state, decided.exit_reason) == ("timeout", "queue_timeout")
    assert decided.error == "never started: waited 1801 s in the queue (the limit is 1800 s)"
    # the expiry is in S3, where a worker looks before it starts the version
    record = world.results.started[("part", 1)]
    assert record.expired and record.reason == decided.error
    assert [(e.status, e.error) for e in world.events.published] == [("timeout", decided.error)]


async def test_a_worker_that_takes_the_version_first_beats_the_queue_expiry() -> None:
    world = World()
    watcher = world.watcher()
    await watcher.accept_upload("part", 1, uploaded_at=START)
    world.clock.advance(1801)
    start = started.started(START + dt.timedelta(seconds=1800.5), worker="w/1", attempt=1)
    world.results.started_after_next_look[("part", 1)] = start  # lands just after the read
    assert await watcher.check("part", 1) is None  # lost the started record: look again
    assert world.results.started[("part", 1)] == start
    assert await watcher.check("part", 1) is None
    stored = await world.jobs.get("part", 1)
    assert stored is not None and stored.state == "processing"
    assert world.events.published == []


async def test_a_decided_version_publishes_one_event_and_leaves_the_pending_set() -> None:
    world = World()
    watcher = world.watcher()
    await watcher.accept_upload("part", 1, uploaded_at=START)
    world.results.found[("part", 1)] = DONE
    world.clock.advance(2)

    decided = await watcher.check("part", 1)
    assert decided is not None and decided.state == "completed"
    assert [(e.project, e.version, e.status) for e in world.events.published] == [
        ("part", 1, "completed")
    ]
    stored = await world.jobs.get("part", 1)
    assert stored is not None and stored.event_published
    assert watcher.pending == set()
    assert await watcher.check("part", 1) is None  # nothing left to check
    assert len(world.events.published) == 1


async def test_a_decided_upload_redelivered_later_is_not_checked_again() -> None:
    world = World()
    watcher = world.watcher()
    await watcher.accept_upload("part", 1, uploaded_at=START)
    world.results.found[("part", 1)] = DONE
    await watcher.check("part", 1)
    await watcher.accept_upload("part", 1, uploaded_at=START)
    assert watcher.pending == set()


async def test_two_watchers_deciding_the_same_version_publish_once() -> None:
    world = World()
    first, second = world.watcher("w1"), world.watcher("w2")
    await first.accept_upload("part", 1, uploaded_at=START)
    world.clock.advance(11)  # w1's lease lapsed (w1 stalled): w2 takes the version over
    await second.maintain()
    assert second.pending == {("part", 1)} and first.pending == {("part", 1)}

    world.results.found[("part", 1)] = DONE
    decided = await asyncio.gather(first.check("part", 1), second.check("part", 1))
    assert [d.state for d in decided if d] == ["completed", "completed"]
    assert len(world.events.published) == 1
    assert first.counters.decided + second.counters.decided == 1
    assert first.counters.lost_races + second.counters.lost_races == 1


async def test_an_event_not_acknowledged_is_published_by_the_sweep() -> None:
    world = World()
    watcher = world.watcher()
    await watcher.accept_upload("part", 1, uploaded_at=START)
    world.results.found[("part", 1)] = DONE
    world.events.fail_next = 1
    await watcher.check("part", 1)
    stored = await world.jobs.get("part", 1)
    assert stored is not None and stored.state == "completed" and not stored.event_published
    assert world.events.published == []

    await watcher.maintain()  # too early: the decision may still be publishing elsewhere
    assert world.events.published == []
    world.clock.advance(6)
    await watcher.maintain()
    await watcher.maintain()
    assert [e.version for e in world.events.published] == [1]
    assert watcher.counters.republished == 1


async def test_an_upload_mongodb_does_not_take_raises_so_the_event_is_not_acked() -> None:
    world = World()
    world.jobs.failing = True
    with pytest.raises(ConnectionError):
        await world.watcher().accept_upload("part", 1, uploaded_at=START)


async def test_released_versions_are_taken_over_at_once() -> None:
    world = World()
    leaving, staying = world.watcher("w1"), world.watcher("w2")
    await leaving.accept_upload("part", 1, uploaded_at=START)
    await staying.maintain()
    assert staying.pending == set()  # w1 holds a live lease
    await leaving.release()
    await staying.maintain()
    assert staying.pending == {("part", 1)} and staying.counters.claimed == 1


async def test_an_error_log_alone_decides_error_after_the_grace_with_its_end_as_message() -> None:
    world = World()
    watcher = world.watcher()
    await watcher.accept_upload("part", 1, uploaded_at=START)
    key = layout.log_key("part", 1, "error", START)
    parsed = layout.parse_log_key(key)
    assert parsed is not None
    world.results.found[("part", 1)] = Found(logs=(LogObject(key, parsed, 9),))
    world.results.texts[key] = "Traceback\nRuntimeError: no shape\n"

    assert await watcher.check("part", 1) is None
    world.clock.advance(0.5)
    assert await watcher.check("part", 1) is None
    world.clock.advance(0.6)
    decided = await watcher.check("part", 1)
    assert decided is not None
    assert (decided.state, decided.log_key) == ("error", key)
    assert decided.error == "Traceback\nRuntimeError: no shape"  # the log's end, trimmed
    assert world.events.published[0].error == decided.error


async def test_no_result_by_the_timeout_after_the_start_is_timeout() -> None:
    world = World()
    watcher = world.watcher()
    await watcher.accept_upload("part", 1, uploaded_at=START)
    world.clock.advance(100)  # 100 s in the queue do not count
    worker_starts(world, after=100)
    assert await watcher.check("part", 1) is None
    world.clock.advance(599)
    assert await watcher.check("part", 1) is None
    world.clock.advance(1)
    decided = await watcher.check("part", 1)
    assert decided is not None and decided.state == "timeout"
    assert decided.error == "no result 600 s after the start"
    assert [e.status for e in world.events.published] == ["timeout"]


async def test_the_running_loop_acts_on_a_nudge_before_its_next_poll() -> None:
    world = World()
    slow = WatcherConfig(
        policy=CONFIG.policy, poll=PollPolicy(interval=60, max_interval=60, backoff_ratio=0)
    )
    watcher = world.watcher(config=slow)
    await watcher.accept_upload("part", 1, uploaded_at=START)
    running = asyncio.create_task(watcher.run())
    try:
        await wait_until(lambda: bool(world.results.looks), within=5, what="the first check")
        world.results.found[("part", 1)] = DONE
        watcher.nudge("part", 1)
        await wait_until(lambda: bool(world.events.published), within=5, what="the decision")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert len(world.results.looks) == 2


async def test_status_changes_reach_subscribers_of_that_project_only() -> None:
    statuses = StatusBroadcast(queue_size=2)
    with statuses.subscribe("a") as a, statuses.subscribe("b") as b:
        for version in (1, 2, 3):
            statuses.publish(status_pb2.ProjectStatus(project="a", version=version))
        statuses.publish(status_pb2.ProjectStatus(project="b", version=9))
        statuses.close()
        assert [s.version async for s in a] == [2, 3]  # a slow stream keeps the newest
        assert [s.version async for s in b] == [9]
    assert statuses.watching == 0


LIGHT = WatcherConfig(policy=CONFIG.policy, poll=LIGHT_POLL)
ONLY_STARTED = Look(started=True, marker=False, logs=False)
ONLY_MARKER = Look(started=False, marker=True, logs=False)
FULL_QUEUED = Look(started=True, marker=True, logs=True)


async def test_a_queued_version_costs_one_get_of_its_started_record_between_full_looks() -> None:
    world = World()
    watcher = world.watcher(config=LIGHT)
    await watcher.accept_upload("part", 1, uploaded_at=START)
    # just uploaded: nothing but a start can be there yet; the first full look is 1 s away
    assert await watcher.check("part", 1) is None
    assert await watcher.check("part", 1) is None
    assert await watcher.check("part", 1, full=True) is None
    assert world.results.plans == [ONLY_STARTED, ONLY_STARTED, FULL_QUEUED]


async def test_a_version_taken_over_from_another_replica_gets_a_full_look_at_once() -> None:
    world = World()
    await world.jobs.add(
        domain.new_job("part", 1, uploaded_at=START), owner="gone", lease_until=START
    )
    watcher = world.watcher(config=LIGHT)
    world.clock.advance(60)
    await watcher.maintain()
    assert await watcher.check("part", 1) is None
    assert world.results.plans == [FULL_QUEUED]


async def test_a_start_found_by_a_light_check_reads_the_marker_at_once() -> None:
    world = World()
    watcher = world.watcher(config=LIGHT)
    await watcher.accept_upload("part", 1, uploaded_at=START)
    world.clock.advance(0.3)
    worker_starts(world, after=0.1)
    world.results.found[("part", 1)] = DONE  # a short job whose nudges were lost
    decided = await watcher.check("part", 1, full=False)
    assert decided is not None and decided.state == "completed"
    assert world.results.plans == [ONLY_STARTED, ONLY_MARKER]
    assert [e.status for e in world.events.published] == ["completed"]


async def test_a_finish_nudge_brings_a_full_look_and_a_start_nudge_a_light_one() -> None:
    world = World()
    watcher = world.watcher(config=LIGHT)
    await watcher.accept_upload("part", 1, uploaded_at=START)
    assert await watcher.check("part", 1) is None  # light; the first full look is 1 s away
    watcher.nudge("part", 1, False)
    assert await watcher.check("part", 1) is None
    watcher.nudge("part", 1, True)
    assert await watcher.check("part", 1) is None
    assert world.results.plans == [ONLY_STARTED, ONLY_STARTED, FULL_QUEUED]


async def test_an_older_contract_error_log_is_seen_by_full_looks_only_and_decides() -> None:
    world = World()
    watcher = world.watcher(config=LIGHT)
    await watcher.accept_upload("part", 1, uploaded_at=START)
    key = layout.log_key("part", 1, "error", START)
    parsed = layout.parse_log_key(key)
    assert parsed is not None
    world.results.found[("part", 1)] = Found(logs=(LogObject(key, parsed, 9),))
    world.results.texts[key] = "RuntimeError: no shape\n"

    world.clock.advance(1)
    assert await watcher.check("part", 1, full=False) is None  # one GET: no log seen
    assert await watcher.check("part", 1, full=True) is None  # the log, from now on
    world.clock.advance(0.6)
    assert await watcher.check("part", 1, full=False) is None  # a light look forgets nothing
    world.clock.advance(0.6)
    decided = await watcher.check("part", 1, full=True)
    assert decided is not None and (decided.state, decided.log_key) == ("error", key)


async def test_an_older_contract_marker_is_found_by_polling_alone() -> None:
    world = World()
    watcher = world.watcher(config=LIGHT)
    await watcher.accept_upload("part", 1, uploaded_at=START)
    running = asyncio.create_task(watcher.run())
    try:
        await wait_until(lambda: bool(world.results.looks), within=5, what="the first check")
        world.results.found[("part", 1)] = DONE  # no started record, no nudge
        await wait_until(lambda: bool(world.events.published), within=5, what="the decision")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert world.results.plans[-1] == FULL_QUEUED


def reads(plans: list[Look]) -> int:
    return sum(int(p.started) + int(p.marker) + int(p.logs) for p in plans)


@pytest.mark.parametrize("budget", [None, 20.0])
async def test_a_deep_queue_is_polled_within_the_read_budget(budget: float | None) -> None:
    """100 versions queued at once and nothing starting for 2 s: beyond each version's first
    check, the running loop reads about `queued_reads_per_second` keys a second in all; with
    no budget each version keeps its own intervals (0.5 s light, 1 s full), ten times that."""
    world = World()
    config = WatcherConfig(
        policy=CONFIG.policy, poll=replace(LIGHT_POLL, queued_reads_per_second=budget)
    )
    watcher = world.watcher(config=config)
    for version in range(1, 101):
        await watcher.accept_upload("deep", version, uploaded_at=world.clock())
    running = asyncio.create_task(watcher.run())
    try:
        await wait_until(lambda: len(world.results.plans) >= 100, within=5, what="first checks")
        first = len(world.results.plans)
        await asyncio.sleep(2.0)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    later = reads(world.results.plans[first:])
    if budget is None:
        assert later > 400, later
    else:
        assert later <= budget * 2.0 * 1.5, later
