"""The upload, list and read use cases against hand-written fakes of S3 and MongoDB."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import itertools
import math
from collections.abc import Callable

import pytest
from scripts_fakes import FakeClaims, FakeIndex, FakeOutbox, FakeStore, no_sleep

from cadpipe import errors
from services.scripts import domain
from services.scripts.domain import (
    Claim,
    IdempotencyInProgress,
    IdempotencyMismatch,
    OutboxEntry,
    VersionConflict,
    VersionRecord,
)
from services.scripts.reindex import reindex
from services.scripts.versioning import Options, Scripts, UploadRequest

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


class World:
    """The use cases wired to fakes, with a controllable clock."""

    def __init__(self, **options: object) -> None:
        self.store = FakeStore()
        self.index = FakeIndex()
        self.outbox = FakeOutbox()
        self.claims = FakeClaims()
        self.now = NOW
        self.events = 0
        ids = itertools.count(1)
        self.scripts = Scripts(
            self.store,
            self.index,
            self.outbox,
            self.claims,
            Options(**options),  # type: ignore[arg-type]
            on_event=self._event,
            clock=lambda: self.now,
            new_id=lambda: f"id{next(ids)}",
            sleep=self._poll,
        )
        self.polled = asyncio.Event()
        """Set when an upload waits for another one's idempotency claim."""

    async def _poll(self, seconds: float) -> None:
        self.polled.set()
        await no_sleep(seconds)

    def _event(self, entry: OutboxEntry) -> None:
        assert entry.msg_id in self.outbox.entries  # recorded before the publisher hears of it
        self.events += 1

    async def upload(self, script: str = "x = 1\n", project: str = "demo", **kw: object) -> int:
        result = await self.scripts.upload(UploadRequest(project, script, {}, **kw))  # type: ignore[arg-type]
        return result.record.version

    def written_by_someone_else(self, project: str, *versions: int) -> None:
        for v in versions:
            self.store.add(VersionRecord(project, v, "0" * 64, 1, NOW, upload_id=f"other{v}"))


async def test_versions_start_at_one_and_each_upload_is_recorded_and_announced() -> None:
    world = World()
    assert [await world.upload(f"x = {i}\n") for i in range(3)] == [1, 2, 3]
    assert world.store.versions("demo") == [1, 2, 3]
    assert world.store.objects[("demo", 2)][1] == b"x = 1\n"
    assert world.index.latest["demo"] == 3
    assert sorted(world.outbox.entries) == [
        "demo.v1.uploaded",
        "demo.v2.uploaded",
        "demo.v3.uploaded",
    ]
    assert world.events == 3
    # the usual path costs one S3 request: the guess from the index is right
    assert world.store.calls == [("put", 1), ("put", 2), ("put", 3)]


async def test_a_racer_taking_the_guessed_version_pushes_the_upload_to_the_next() -> None:
    world = World()
    await world.upload()

    async def racer(record: VersionRecord) -> None:
        if record.version == 2 and ("demo", 2) not in world.store.objects:
            world.written_by_someone_else("demo", 2)

    world.store.before_put = racer
    assert await world.upload() == 3
    assert world.store.objects[("demo", 3)][0].upload_id != "other3"
    assert world.index.latest["demo"] == 3
    assert "demo.v3.uploaded" in world.outbox.entries
    assert "demo.v2.uploaded" not in world.outbox.entries  # the racer announces its own


async def test_a_stale_guess_is_repaired_with_few_probes() -> None:
    world = World()
    world.index.latest["demo"] = 3  # another replica wrote up to 1000 without telling this index
    world.written_by_someone_else("demo", *range(1, 1001))
    assert await world.upload() == 1001
    probes = world.store.count("head")
    assert probes <= 2 * math.ceil(math.log2(1000)) + 2, world.store.calls
    assert world.store.count("put") == 2


async def test_versions_past_nine_are_numbers_not_strings() -> None:
    """S3 lists p_v10.py before p_v2.py; nothing here may rely on that order."""
    world = World()
    world.written_by_someone_else("demo", *range(1, 11))
    world.index.latest["demo"] = 9
    assert await world.upload() == 11
    assert await world.upload() == 12
    page = await world.scripts.list_versions("demo", 5, "")
    assert [r.version for r in page.records] == [1, 2, 3, 4, 5]
    rest = await world.scripts.list_versions("demo", 0, page.next_page_token)
    assert [r.version for r in rest.records] == [6, 7, 8, 9, 10, 11, 12]
    assert rest.next_page_token == ""


async def test_listing_finds_versions_the_index_lacks_and_indexes_them() -> None:
    world = World()
    await world.upload()
    world.written_by_someone_else("demo", 2, 3, 4)  # a replica that crashed before indexing
    page = await world.scripts.list_versions("demo", 0, "")
    assert [r.version for r in page.records] == [1, 2, 3, 4]
    assert world.index.latest["demo"] == 4
    assert sorted(v for _, v in world.index.docs) == [1, 2, 3, 4]
    assert await world.upload() == 5


async def test_an_empty_or_unknown_project_lists_nothing() -> None:
    world = World()
    page = await world.scripts.list_versions("nobody", 0, "")
    assert (page.records, page.next_page_token) == ([], "")


async def test_concurrent_uploads_in_one_process_do_not_fight_over_versions() -> None:
    world = World()
    versions = await asyncio.gather(*(world.upload(f"x = {i}\n") for i in range(20)))
    assert sorted(versions) == list(range(1, 21))
    assert world.store.count("put") == 20  # the local queue: no conflicts, no probes
    for i, v in enumerate(versions):
        assert world.store.objects[("demo", v)][1] == f"x = {i}\n".encode()


async def test_puts_of_one_project_are_in_flight_together_and_leave_no_gap() -> None:
    world = World(puts_in_flight=4)
    in_flight: set[int] = set()
    most = 0
    release = asyncio.Event()

    async def held(record: VersionRecord) -> None:
        nonlocal most
        in_flight.add(record.version)
        most = max(most, len(in_flight))
        if len(in_flight) == 4:
            release.set()
        await release.wait()
        in_flight.discard(record.version)

    world.store.before_put = held
    versions = await asyncio.gather(*(world.upload(f"x = {i}\n") for i in range(10)))
    assert sorted(versions) == list(range(1, 11))
    assert most == 4  # never more than the limit at once
    assert world.store.count("put") == 10


async def test_another_writer_racing_puts_in_flight_leaves_no_gap_and_no_overwrite() -> None:
    world = World(puts_in_flight=8)
    taken = {3, 4, 9}  # another replica writes these while ours are in flight

    async def racer(record: VersionRecord) -> None:
        await asyncio.sleep(0)
        if record.version in taken:
            taken.discard(record.version)
            world.written_by_someone_else("demo", record.version)

    world.store.before_put = racer
    versions = await asyncio.gather(*(world.upload(f"x = {i}\n") for i in range(12)))
    assert len(set(versions)) == 12
    assert world.store.versions("demo") == list(range(1, 16))  # 12 ours + 3 others, no gap
    for i, v in enumerate(versions):
        record, body = world.store.objects[("demo", v)]
        assert body == f"x = {i}\n".encode() and not record.upload_id.startswith("other")


@pytest.mark.parametrize("seed", range(5))
async def test_failed_puts_and_a_racing_writer_leave_no_gap_once_uploads_go_on(seed: int) -> None:
    import random

    chance = random.Random(seed)
    world = World(puts_in_flight=6)
    failing = True

    async def weather(record: VersionRecord) -> None:
        for _ in range(chance.randrange(3)):
            await asyncio.sleep(0)
        roll = chance.random()
        if failing and roll < 0.15:
            raise errors.Unavailable("S3: connection reset")
        if roll > 0.9 and ("demo", record.version) not in world.store.objects:
            world.written_by_someone_else("demo", record.version)

    world.store.before_put = weather
    results = []
    for wave in range(4):
        results += await asyncio.gather(
            *(world.upload(f"x = {wave}.{i}\n") for i in range(10)), return_exceptions=True
        )
    failing = False  # S3 answers again: the next uploads fill what the failures left
    results += await asyncio.gather(*(world.upload(f"y = {i}\n") for i in range(10)))
    stored = world.store.versions("demo")
    assert stored == list(range(1, len(stored) + 1)), stored
    ours = [v for v in results if isinstance(v, int)]
    assert len(set(ours)) == len(ours)
    assert all(not isinstance(r, Exception) or isinstance(r, errors.Unavailable) for r in results)


async def test_uploads_finishing_together_are_recorded_together() -> None:
    world = World()
    versions = await asyncio.gather(*(world.upload(f"x = {i}\n") for i in range(20)))
    assert sorted(versions) == list(range(1, 21))
    assert sum(world.index.batches) == 20 and len(world.index.batches) < 20
    assert sorted(world.index.docs) == [("demo", v) for v in range(1, 21)]
    assert len(world.outbox.entries) == 20 and world.events == 20


async def test_a_version_whose_put_failed_is_filled_by_the_next_upload() -> None:
    world = World(puts_in_flight=4)
    failed = False
    both_sent = asyncio.Event()
    sent: list[int] = []

    async def second_fails_once(record: VersionRecord) -> None:
        nonlocal failed
        sent.append(record.version)
        if len(sent) == 2:
            both_sent.set()
        await both_sent.wait()
        if record.version == 1 and not failed:
            failed = True
            raise errors.Unavailable("S3: connection reset")

    world.store.before_put = second_fails_once
    results = await asyncio.gather(
        world.upload("a = 1\n"), world.upload("b = 2\n"), return_exceptions=True
    )
    assert isinstance(results[0], errors.Unavailable) and results[1] == 2
    assert world.store.versions("demo") == [2]  # a hole, for now
    assert await world.upload("c = 3\n") == 1  # filled by the next upload
    assert await world.upload("d = 4\n") == 3
    assert world.store.versions("demo") == [1, 2, 3]


async def test_bounded_retries_end_in_a_conflict_that_stored_nothing() -> None:
    world = World(max_version_attempts=3)

    async def always_first(record: VersionRecord) -> None:
        if ("demo", record.version) not in world.store.objects:
            world.written_by_someone_else("demo", record.version)

    world.store.before_put = always_first
    with pytest.raises(VersionConflict, match="nothing was stored"):
        await world.upload()
    assert all(r.upload_id.startswith("other") for r, _ in world.store.objects.values())
    assert world.outbox.entries == {}


async def test_a_put_whose_answer_was_lost_is_recognised_as_our_own() -> None:
    world = World()
    world.store.fail_puts_after_writing = 1
    assert await world.upload() == 1
    assert world.store.versions("demo") == [1]  # not stored a second time as version 2
    assert "demo.v1.uploaded" in world.outbox.entries


async def test_a_failed_put_that_did_not_land_is_unavailable() -> None:
    world = World()

    async def down(record: VersionRecord) -> None:
        raise errors.Unavailable("S3: connection refused")

    world.store.before_put = down
    with pytest.raises(errors.Unavailable):
        await world.upload()
    assert world.store.objects == {} and world.outbox.entries == {}


async def test_a_caller_that_goes_away_mid_upload_still_gets_its_version_announced() -> None:
    world = World()
    in_put = asyncio.Event()
    release = asyncio.Event()

    async def slow(record: VersionRecord) -> None:
        in_put.set()
        await release.wait()

    world.store.before_put = slow
    caller = asyncio.create_task(world.upload())
    await in_put.wait()
    caller.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await world.scripts.wait_idle()
    assert world.store.versions("demo") == [1]
    assert "demo.v1.uploaded" in world.outbox.entries
    assert world.index.latest["demo"] == 1


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never met")


async def test_a_caller_that_goes_away_before_its_put_stores_nothing() -> None:
    # one put of the project in flight at a time: the second upload waits for a slot
    world = World(puts_in_flight=1)
    in_put = asyncio.Event()
    release = asyncio.Event()

    async def slow_first(record: VersionRecord) -> None:
        if record.version == 1:
            in_put.set()
            await release.wait()

    world.store.before_put = slow_first
    first = asyncio.create_task(world.upload("a = 1\n"))
    await in_put.wait()
    second = asyncio.create_task(world.upload("b = 2\n", idempotency_key="k"))
    await until(lambda: ("demo", "k") in world.claims.claims)  # claimed, now queued behind first
    await until(lambda: len(world.scripts._tasks) == 2)
    second.cancel()
    release.set()
    assert await first == 1
    with pytest.raises(asyncio.CancelledError):
        await second
    await world.scripts.wait_idle()
    assert world.store.versions("demo") == [1]
    assert world.claims.claims == {}  # released: a retry with the key starts afresh


async def test_bad_input_stores_nothing() -> None:
    world = World()
    with pytest.raises(errors.InvalidArgument):
        await world.upload("def f(:\n")
    with pytest.raises(errors.InvalidArgument):
        await world.upload(project="../x")
    assert world.store.calls == [] and world.outbox.entries == {}


async def test_reading_a_version() -> None:
    world = World()
    await world.upload("a = 1\n")
    record, body = await world.scripts.get_version("demo", 1)
    assert (record.version, body) == (1, b"a = 1\n")
    with pytest.raises(errors.NotFound, match="no version 2"):
        await world.scripts.get_version("demo", 2)
    with pytest.raises(errors.InvalidArgument):
        await world.scripts.get_version("demo", -1)


# --- idempotency ---------------------------------------------------------------------------


async def test_the_same_key_replays_the_first_version() -> None:
    world = World()
    first = await world.scripts.upload(UploadRequest("demo", "x = 1\n", {"a": "b"}, "key-1"))
    again = await world.scripts.upload(UploadRequest("demo", "x = 1\n", {"a": "b"}, "key-1"))
    other = await world.scripts.upload(UploadRequest("demo", "x = 1\n", {"a": "b"}, "key-2"))
    assert (first.record.version, first.replayed) == (1, False)
    assert (again.record.version, again.replayed) == (1, True)
    assert again.record.sha256 == first.record.sha256
    assert (other.record.version, other.replayed) == (2, False)
    assert world.store.versions("demo") == [1, 2]
    assert world.store.objects[("demo", 1)][0].idempotency_key == "key-1"


async def test_a_key_is_per_project() -> None:
    world = World()
    assert await world.upload(project="a", idempotency_key="k") == 1
    assert await world.upload(project="b", idempotency_key="k") == 1
    assert world.store.versions("b") == [1]


async def test_the_same_key_with_another_script_is_refused() -> None:
    world = World()
    await world.upload("x = 1\n", idempotency_key="k")
    with pytest.raises(IdempotencyMismatch, match="different script"):
        await world.upload("x = 2\n", idempotency_key="k")
    assert world.store.versions("demo") == [1]


async def test_two_concurrent_uploads_with_one_key_store_once() -> None:
    world = World()
    release = asyncio.Event()

    async def slow(record: VersionRecord) -> None:
        await release.wait()

    world.store.before_put = slow
    first = asyncio.create_task(world.scripts.upload(UploadRequest("demo", "x = 1\n", {}, "k")))
    second = asyncio.create_task(world.scripts.upload(UploadRequest("demo", "x = 1\n", {}, "k")))
    await asyncio.wait_for(world.polled.wait(), 5)  # one of them waits for the other
    release.set()
    results = await asyncio.gather(first, second)
    assert sorted(r.replayed for r in results) == [False, True]
    assert {r.record.version for r in results} == {1}
    assert world.store.versions("demo") == [1]


async def test_a_second_caller_gives_up_waiting_with_a_clear_message() -> None:
    world = World(idempotency_wait=0.0)
    _pending(world, "busy", from_version=0)
    with pytest.raises(IdempotencyInProgress, match="still in progress"):
        await world.upload(idempotency_key="k")
    assert world.store.objects == {}


def _pending(world: World, owner: str, from_version: int) -> Claim:
    fingerprint = domain.request_fingerprint(hashlib.sha256(b"x = 1\n").hexdigest(), {})
    claim = Claim("demo", "k", owner, fingerprint, NOW, from_version=from_version)
    world.claims.claims[("demo", "k")] = claim
    return claim


async def test_an_abandoned_claim_whose_owner_stored_its_version_is_replayed() -> None:
    world = World(idempotency_stale=60)
    world.written_by_someone_else("demo", 1, 2)
    _pending(world, "dead", from_version=2)
    # the dead owner had written version 3 (with the key) and crashed before recording it
    world.store.add(
        VersionRecord("demo", 3, "1" * 64, 6, NOW, idempotency_key="k", upload_id="dead-put")
    )
    world.written_by_someone_else("demo", 4)
    world.index.latest["demo"] = 2
    world.now = NOW + dt.timedelta(seconds=61)
    result = await world.scripts.upload(UploadRequest("demo", "x = 1\n", {}, "k"))
    assert (result.record.version, result.replayed) == (3, True)
    assert world.store.versions("demo") == [1, 2, 3, 4]
    assert world.claims.claims[("demo", "k")].state == "done"
    assert "demo.v3.uploaded" in world.outbox.entries  # the dead owner never announced it


async def test_an_abandoned_claim_whose_owner_stored_nothing_is_taken_over() -> None:
    world = World(idempotency_stale=60)
    _pending(world, "dead", from_version=0)
    world.now = NOW + dt.timedelta(seconds=61)
    result = await world.scripts.upload(UploadRequest("demo", "x = 1\n", {}, "k"))
    assert (result.record.version, result.replayed) == (1, False)
    assert world.claims.claims[("demo", "k")].version == 1


async def test_a_claim_is_released_when_its_upload_stored_nothing() -> None:
    world = World(max_version_attempts=1)

    async def taken(record: VersionRecord) -> None:
        world.written_by_someone_else("demo", record.version)

    world.store.before_put = taken
    with pytest.raises(VersionConflict):
        await world.upload(idempotency_key="k")
    assert world.claims.claims == {}
    world.store.before_put = None
    assert await world.upload(idempotency_key="k") == 2


# --- reindex -------------------------------------------------------------------------------


async def test_reindex_rebuilds_the_index_and_announces_what_nobody_announced() -> None:
    world = World()
    await world.upload()
    await world.upload(idempotency_key="k")
    # version 3 stored by a process that died before its outbox insert
    world.store.add(VersionRecord("demo", 3, "2" * 64, 5, NOW, upload_id="crashed"))
    world.store.extra_keys.append("processed/demo/demo_v1.py.done")
    world.index.latest["demo"] = 7  # wrong, and a version document that S3 never had
    world.index.docs[("demo", 7)] = dataclasses.replace(world.index.docs[("demo", 1)], version=7)
    world.claims.claims.clear()

    report = await reindex(world.store, world.index, world.outbox, world.claims)

    assert (report.projects, report.versions, report.events_queued) == (1, 3, 1)
    assert world.index.latest["demo"] == 3
    assert sorted(v for _, v in world.index.docs) == [1, 2, 3]
    assert world.index.docs[("demo", 3)].upload_id == "crashed"
    assert "demo.v3.uploaded" in world.outbox.entries
    assert world.claims.claims[("demo", "k")].version == 2

    world.outbox.entries.clear()  # lost outbox too: only unfinished versions get an event
    await reindex(world.store, world.index, world.outbox, world.claims)
    assert sorted(world.outbox.entries) == ["demo.v2.uploaded", "demo.v3.uploaded"]
