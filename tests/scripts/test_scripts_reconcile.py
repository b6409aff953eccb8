"""A MongoDB failure after the S3 put: retried inside the upload's shielded task, and, when it
outlasts the retries, recorded later by the reconciler with its uploaded event."""

from __future__ import annotations

import asyncio

import pytest
from scripts_fakes import FakeClaims, FakeIndex, FakeOutbox, FakeStore, no_sleep

from cadpipe import errors, layout
from services.scripts.domain import VersionRecord
from services.scripts.reconcile import Reconciler
from services.scripts.versioning import Options, Scripts, UploadRequest


class World:
    def __init__(self) -> None:
        self.store = FakeStore()
        self.index = FakeIndex()
        self.outbox = FakeOutbox()
        self.scripts = Scripts(
            self.store,
            self.index,
            self.outbox,
            FakeClaims(),
            Options(record_attempts=3),
            sleep=no_sleep,
        )
        self.reconciler = Reconciler(
            self.scripts, self.store, self.index, self.outbox, interval=1.0, full_every=0
        )

    async def upload(self, project: str = "demo") -> int:
        result = await self.scripts.upload(UploadRequest(project, "x = 1\n", {}))
        return result.record.version


async def test_a_failure_injected_once_after_the_put_is_retried_by_the_upload() -> None:
    world = World()
    world.index.failing_writes = 1
    assert await world.upload() == 1
    assert world.index.latest["demo"] == 1
    assert list(world.outbox.entries) == ["demo.v1.uploaded"]
    assert world.scripts.unrecorded == set()


async def test_a_failure_outlasting_the_retries_is_recorded_by_the_reconciler() -> None:
    world = World()
    assert await world.upload() == 1
    world.index.failing_writes = 3  # every try of the next upload
    with pytest.raises(errors.Unavailable, match="stored as version 2"):
        await world.upload()
    assert world.store.versions("demo") == [1, 2]
    assert world.index.latest["demo"] == 1
    assert world.scripts.unrecorded == {"demo"}

    assert await world.reconciler.pass_once() == 1
    assert world.index.latest["demo"] == 2
    assert "demo.v2.uploaded" in world.outbox.entries
    assert world.scripts.unrecorded == set()
    assert await world.reconciler.pass_once(full=True) == 0  # nothing left, nothing twice


async def test_the_reconciler_records_a_finished_version_without_an_event() -> None:
    world = World()
    world.index.failing_writes = 3
    world.outbox.entries.clear()
    with pytest.raises(errors.Unavailable):
        await world.upload()
    world.outbox.entries.clear()  # the outbox write may have landed; say it did not
    world.store.extra_keys.append(layout.marker_key("demo", 1))  # a worker finished it anyway
    assert await world.reconciler.pass_once() == 1
    assert world.index.latest["demo"] == 1
    assert world.outbox.entries == {}


async def test_a_pass_while_mongodb_is_still_down_keeps_the_project_for_the_next() -> None:
    world = World()
    world.index.failing_writes = 4
    with pytest.raises(errors.Unavailable):
        await world.upload()
    assert await world.reconciler.pass_once() == 0
    assert world.scripts.unrecorded == {"demo"}
    assert await world.reconciler.pass_once() == 1


@pytest.mark.timeout(10)
async def test_a_replica_dying_with_puts_in_flight_leaves_a_hole_the_next_uploads_repair() -> None:
    """Version 2 landed while version 1's put was still in flight, and the replica died: version
    2 was not recorded (an upload is recorded only once every lower put settled), so the next
    replica's upload guesses version 1 and fills it, and the one after finds version 2 held and
    hands the project to the reconciler, which records it with its event."""
    dying = World()
    in_put = asyncio.Event()

    async def first_hangs(record: VersionRecord) -> None:
        if record.version == 1:
            in_put.set()
            await asyncio.Event().wait()  # the replica dies before this put lands

    dying.store.before_put = first_hangs
    uploads = [asyncio.create_task(dying.upload()) for _ in range(2)]
    await in_put.wait()
    for _ in range(100):
        await asyncio.sleep(0)
    assert dying.store.versions("demo") == [2]
    assert dying.index.latest.get("demo", 0) == 0  # version 2's upload waits for version 1
    for task in [*uploads, *dying.scripts._tasks]:
        task.cancel()
    await asyncio.gather(*uploads, *dying.scripts._tasks, return_exceptions=True)

    world = World()  # the next replica, over the same bucket, index and outbox
    world.store, world.index, world.outbox = dying.store, dying.index, dying.outbox
    world.store.before_put = None
    world.scripts = Scripts(world.store, world.index, world.outbox, FakeClaims(), sleep=no_sleep)
    world.reconciler = Reconciler(
        world.scripts, world.store, world.index, world.outbox, interval=1.0, full_every=0
    )
    assert await world.upload() == 1
    assert await world.upload() == 3
    assert 2 in world.scripts.held_elsewhere["demo"]
    await world.reconciler.pass_once()
    assert world.store.versions("demo") == [1, 2, 3]
    assert sorted(v for p, v in world.index.docs if p == "demo") == [1, 2, 3]
    assert "demo.v2.uploaded" in world.outbox.entries
