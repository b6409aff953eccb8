"""The jobs collection (services/watcher/mongo_jobs.py) on mongomock, or on the real MongoDB that
MONGODB_URI names."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from cadpipe import started
from cadpipe.marker import MarkerOutput
from services.watcher import domain
from services.watcher.domain import Job, Outcome
from services.watcher.mongo_jobs import MongoJobs

T0 = dt.datetime(2026, 11, 24, 10, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def done(job: Job, state: str = "completed", detected: float = 2.0) -> Job:
    outputs = (
        MarkerOutput(
            key=f"output/{job.project}/v{job.version}/m.stl",
            name="m.stl",
            format="stl",
            size_bytes=3,
            sha256="00" * 32,
            content_type="model/stl",
        ),
    )
    outcome = Outcome(state=state, finished_at=at(1), outputs=outputs, log_key="lk")  # type: ignore[arg-type]
    return domain.finish(job, outcome, detected_at=at(detected))


@pytest.fixture
async def jobs(mongo_db: Any) -> MongoJobs:
    store = MongoJobs(mongo_db)
    await store.ensure_indexes()
    return store


async def test_adding_a_version_twice_keeps_the_first_document(
    jobs: MongoJobs, unique: str
) -> None:
    job = domain.new_job(f"p{unique}", 1, uploaded_at=T0)
    assert await jobs.add(job, owner="a", lease_until=at(10)) == (job, "a")
    stored, owner = await jobs.add(job, owner="b", lease_until=at(20))
    assert (stored.state, stored.uploaded_at, owner) == ("queued", T0, "a")


async def test_a_start_is_stored_once_and_a_started_job_is_still_pending(
    jobs: MongoJobs, unique: str
) -> None:
    job = domain.new_job(f"p{unique}", 1, uploaded_at=T0)
    await jobs.add(job, owner="a", lease_until=at(10))
    running = domain.start(job, started.started(at(4), worker="w/1", attempt=1))
    assert await jobs.start(running) is True
    assert await jobs.start(running) is False  # no longer queued
    assert await jobs.get(job.project, 1) == running
    assert await jobs.renew_leases("a", until=at(20)) == 1  # still leased: still pending
    assert await jobs.finish(done(running)) is True


async def test_only_one_of_many_concurrent_decisions_wins(jobs: MongoJobs, unique: str) -> None:
    job = domain.new_job(f"p{unique}", 1, uploaded_at=T0)
    await jobs.add(job, owner="a", lease_until=at(10))
    results = await asyncio.gather(
        *(jobs.finish(done(job, state)) for state in ["completed", "error", "timeout"] * 4)
    )
    assert results.count(True) == 1
    stored = await jobs.get(job.project, 1)
    assert stored is not None and stored.terminal and not stored.event_published
    assert await jobs.finish(done(job)) is False  # terminal states are final


async def test_a_decided_job_round_trips_and_is_unpublished_until_marked(
    jobs: MongoJobs, unique: str
) -> None:
    job = domain.new_job(f"p{unique}", 1, uploaded_at=T0)
    await jobs.add(job, owner="a", lease_until=at(10))
    decided = done(job)
    assert await jobs.finish(decided)
    assert await jobs.get(job.project, 1) == decided

    assert await jobs.unpublished(decided_before=at(2), limit=10) == []  # decided at 2: too new
    assert [j.version for j in await jobs.unpublished(decided_before=at(3), limit=10)] == [1]
    await jobs.mark_published(job.project, 1)
    assert await jobs.unpublished(decided_before=at(3), limit=10) == []


async def test_leases_are_renewed_claimed_when_lapsed_and_released(
    jobs: MongoJobs, unique: str
) -> None:
    project = f"p{unique}"
    for version in (1, 2):
        await jobs.add(
            domain.new_job(project, version, uploaded_at=T0), owner="a", lease_until=at(10)
        )

    assert await jobs.claim_lapsed("b", now=at(5), until=at(15), limit=10) == []
    assert await jobs.renew_leases("a", until=at(30)) == 2
    assert await jobs.claim_lapsed("b", now=at(20), until=at(40), limit=10) == []
    claimed = await jobs.claim_lapsed("b", now=at(31), until=at(50), limit=10)
    assert sorted(j.version for j in claimed) == [1, 2]
    # The owner's own jobs come back at once (a restart with a stable name).
    assert len(await jobs.claim_lapsed("b", now=at(32), until=at(60), limit=10)) == 2

    assert await jobs.release("b") == 2
    assert len(await jobs.claim_lapsed("c", now=at(33), until=at(70), limit=10)) == 2
    assert await jobs.finish(done(await jobs.get(project, 1))) is True  # type: ignore[arg-type]
    assert await jobs.renew_leases("c", until=at(80)) == 1  # decided jobs hold no lease


async def test_two_replicas_claiming_the_same_lapsed_jobs_split_them(
    jobs: MongoJobs, unique: str
) -> None:
    project = f"p{unique}"
    for version in range(1, 21):
        job = domain.new_job(project, version, uploaded_at=T0)
        await jobs.add(job, owner="dead", lease_until=at(1))
    b, c = await asyncio.gather(
        jobs.claim_lapsed("b", now=at(5), until=at(15), limit=100),
        jobs.claim_lapsed("c", now=at(5), until=at(15), limit=100),
    )
    assert sorted(j.version for j in b + c) == list(range(1, 21))


async def test_latest_and_latest_in_a_state(jobs: MongoJobs, unique: str) -> None:
    project = f"p{unique}"
    assert await jobs.latest(project) is None
    for version in (1, 2, 3):
        job = domain.new_job(project, version, uploaded_at=T0)
        await jobs.add(job, owner="a", lease_until=at(10))
        if version < 3:
            await jobs.finish(done(job, "completed" if version == 1 else "error"))
    latest = await jobs.latest(project)
    completed = await jobs.latest(project, state="completed")
    assert latest is not None and (latest.version, latest.state) == (3, "queued")
    assert completed is not None and completed.version == 1
    assert await jobs.get(project, 9) is None
