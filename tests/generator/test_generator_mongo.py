"""The generations store against MongoDB (mongomock, or a real server when MONGODB_URI names
one): idempotency by unique insert, compare-and-set saves, leases."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from cadpipe import errors
from services.generator import domain
from services.generator.domain import Generation, Round
from services.generator.mongo_generations import MongoGenerations
from services.generator.ports import Expected, Measured

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def generation(gid: str, *, project: str = "p1", key: str = "", minutes: int = 0) -> Generation:
    return Generation(
        id=gid,
        project=project,
        prompt="a box",
        caller="alice",
        caller_admin=False,
        created_at=T0 + dt.timedelta(minutes=minutes),
        deadline_at=T0 + dt.timedelta(minutes=minutes + 15),
        expected=Expected(bbox_mm=(10, 20, 30), volume_mm3=6000),
        idempotency_key=key,
        sequence=1,
    )


@pytest.fixture
def store(mongo_db: Any) -> MongoGenerations:
    found = MongoGenerations(mongo_db)
    found.ensure_indexes()
    return found


async def test_round_trip_and_compare_and_set(store: MongoGenerations) -> None:
    first = generation("g1")
    assert await store.insert(first, runner="r1", lease_until=T0) is None
    measured = Measured(bbox_mm=(10, 20, 30), volume_mm3=6000, area_mm2=2200, solids=1, valid=True)
    moved = dataclasses.replace(
        first.with_round(
            Round(
                round=1,
                state=domain.MISMATCH,
                version=3,
                script="x",
                measured=measured,
                provider="fake",
                model="m",
                tokens_in=5,
                cost_usd=0.5,
                started_at=T0,
            ),
            state=domain.REPAIRING,
        ),
        sequence=2,
    )
    assert await store.save(moved, runner="r1", lease_until=T0)
    assert await store.get("p1", "g1") == moved
    assert await store.get("other", "g1") is None
    # a stale sequence, or another runner, changes nothing
    assert not await store.save(moved, runner="r1", lease_until=T0)
    assert not await store.save(dataclasses.replace(moved, sequence=3), runner="r2", lease_until=T0)


async def test_an_idempotency_key_starts_one_generation(store: MongoGenerations) -> None:
    assert await store.insert(generation("g1", key="k"), runner="r1", lease_until=T0) is None
    again = await store.insert(generation("g2", key="k"), runner="r1", lease_until=T0)
    assert again is not None and again.id == "g1"
    assert await store.get("p1", "g2") is None
    # the same key on another project is another generation
    assert (
        await store.insert(generation("g3", project="p2", key="k"), runner="r", lease_until=T0)
        is None
    )


async def test_leases(store: MongoGenerations) -> None:
    for gid in ("a", "b"):
        await store.insert(generation(gid), runner="r1", lease_until=T0 + dt.timedelta(seconds=30))
    await store.renew("r1", ["a"], until=T0 + dt.timedelta(seconds=90))
    now = T0 + dt.timedelta(seconds=60)
    claimed = await store.claim_lapsed("r2", now=now, until=now, limit=10)
    assert [g.id for g in claimed] == ["b"]
    assert await store.claim_lapsed("r3", now=now, until=now, limit=10) == []
    await store.release("r1", now=now)
    assert [g.id for g in await store.claim_lapsed("r3", now=now, until=now, limit=10)] == ["a"]


async def test_pages_newest_first_and_a_forged_token(store: MongoGenerations) -> None:
    for n in range(5):
        await store.insert(generation(f"g{n}", minutes=n), runner="r", lease_until=T0)
    page, token = await store.page("p1", limit=2, after="")
    assert [g.id for g in page] == ["g4", "g3"] and token
    rest, token = await store.page("p1", limit=10, after=token)
    assert [g.id for g in rest] == ["g2", "g1", "g0"] and token == ""
    with pytest.raises(errors.InvalidArgument):
        await store.page("p1", limit=2, after="eyJwIjoib3RoZXIiLCJhIjoxfQ")
    assert len(await store.since(T0 + dt.timedelta(minutes=3))) == 2
