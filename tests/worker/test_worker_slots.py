"""The intake's slots are cores: a job holds one until FreeCAD is done with it, then stores its
results without it, so that the next job's FreeCAD starts meanwhile; never more jobs run FreeCAD
at once than `concurrency`, nor more are held than `jobs_in_flight`. The intake is driven with a
fake job service whose phases the test opens one by one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from cadpipe import layout, messaging
from cadpipe.v1 import events_pb2
from services.worker.domain.job import Job
from services.worker.intake import Intake, IntakeConfig


class FakeMessage:
    def __init__(self, version: int) -> None:
        self.data = messaging.encode(
            events_pb2.ScriptUploaded(
                project="slots",
                version=version,
                key=layout.script_key("slots", version),
                owner=f"owner-{version}",  # owners in turn: order stays the versions'
            )
        )
        self.headers: dict[str, str] = {}
        self.metadata = SimpleNamespace(num_delivered=1)
        self.acked = False

    async def ack(self) -> None:
        self.acked = True

    async def in_progress(self) -> None:
        return None

    async def nak(self, delay: float | None = None) -> None:
        return None

    async def term(self) -> None:
        return None


class PhasedService:
    """Each job runs "FreeCAD" until its run gate opens, gives its core back, then "stores"
    until its store gate opens."""

    def __init__(self) -> None:
        self.run_gates: dict[int, asyncio.Event] = {}
        self.store_gates: dict[int, asyncio.Event] = {}
        self.running: set[int] = set()
        self.storing: set[int] = set()
        self.most_running = 0
        self.started: list[int] = []

    def gates(self, version: int) -> tuple[asyncio.Event, asyncio.Event]:
        run = self.run_gates.setdefault(version, asyncio.Event())
        store = self.store_gates.setdefault(version, asyncio.Event())
        return run, store

    async def handle(self, job: Job, attempt: int, core_done: Callable[[], None]) -> None:
        run, store = self.gates(job.version)
        self.started.append(job.version)
        self.running.add(job.version)
        self.most_running = max(self.most_running, len(self.running))
        await run.wait()
        self.running.discard(job.version)
        core_done()
        self.storing.add(job.version)
        await store.wait()
        self.storing.discard(job.version)
        return None  # "finished already": acked, nothing more to record


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def intake_with(service: PhasedService, versions: int, **config: Any) -> Intake:
    intake = Intake(
        None,  # type: ignore[arg-type]  # no fetching here: messages are accepted directly
        IntakeConfig(
            "c", ("s",), ack_wait_seconds=30, max_deliver=3, fetch_timeout_seconds=0.05, **config
        ),
        service,  # type: ignore[arg-type]
    )
    for version in range(1, versions + 1):
        await intake._accept(FakeMessage(version))  # type: ignore[arg-type]
    return intake


async def run_dispatch(intake: Intake) -> asyncio.Task[None]:
    task = asyncio.create_task(intake._dispatch_forever())
    await settle()
    return task


async def stop(intake: Intake, task: asyncio.Task[None], service: PhasedService) -> None:
    for gate in [*service.run_gates.values(), *service.store_gates.values()]:
        gate.set()
    await settle()
    intake._stopping.set()
    intake._notify()
    await asyncio.wait_for(task, 2)


async def test_the_next_job_runs_while_the_last_one_stores_its_results() -> None:
    service = PhasedService()
    intake = await intake_with(service, 3, concurrency=1, jobs_in_flight=2)
    task = await run_dispatch(intake)
    try:
        assert service.started == [1]  # one core: one job runs FreeCAD
        service.gates(1)[0].set()  # job 1's FreeCAD is done; it stores
        await settle()
        assert service.storing == {1} and service.started == [1, 2]
        service.gates(2)[0].set()  # job 2 done too: two storing, the limit of jobs in flight
        await settle()
        assert service.storing == {1, 2} and service.started == [1, 2]
        service.gates(1)[1].set()  # job 1 stored: room for job 3
        await settle()
        assert service.started == [1, 2, 3] and service.running == {3}
        assert service.most_running == 1
    finally:
        await stop(intake, task, service)


async def test_without_room_in_flight_a_job_holds_its_slot_until_it_is_stored() -> None:
    service = PhasedService()
    intake = await intake_with(service, 2, concurrency=1)  # jobs_in_flight 0: concurrency
    task = await run_dispatch(intake)
    try:
        service.gates(1)[0].set()
        await settle()
        assert service.storing == {1} and service.started == [1]
        service.gates(1)[1].set()
        await settle()
        assert service.started == [1, 2]
    finally:
        await stop(intake, task, service)


@pytest.mark.parametrize("concurrency", [1, 2, 3])
async def test_never_more_jobs_run_freecad_than_slots(concurrency: int) -> None:
    service = PhasedService()
    intake = await intake_with(
        service, 8, concurrency=concurrency, jobs_in_flight=2 * concurrency
    )
    task = await run_dispatch(intake)
    try:
        for version in range(1, 9):
            await settle()
            assert len(service.running) <= concurrency
            assert len(service.running) + len(service.storing) <= 2 * concurrency
            service.gates(version)[0].set()
            service.gates(version)[1].set()
        await settle()
        assert service.started == list(range(1, 9))
        assert service.most_running == concurrency
    finally:
        await stop(intake, task, service)
