"""The local stack's mongomock lookups (cadpipe.devstack._index_mongomock_lookups) give the same
answers as mongomock's own scan: random writes (inserts, in-place updates, replaces, deletes,
values that become arrays or subdocuments) interleaved with the filters the services use, each
answer compared, in order, with every stored document run through mongomock's own matcher."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

import pytest
from mongomock import filtering

from cadpipe.devstack import mongomock_client

PROJECTS = ("alpha", "beta", "gamma")
TAGS = ("a", "b", "c")


def _value(rng: random.Random) -> Any:
    """A value for `project` or `tags`: mostly plain, sometimes an array, a subdocument or
    missing, so that element-wise matches and missing fields are exercised."""
    return rng.choice(
        [
            rng.choice(PROJECTS),
            rng.choice(PROJECTS),
            rng.choice(TAGS),
            [rng.choice(TAGS), rng.choice(PROJECTS)],
            {"nested": rng.choice(PROJECTS)},
            None,
        ]
    )


def _filters(rng: random.Random) -> list[dict[str, Any]]:
    project, version, tag = rng.choice(PROJECTS), rng.randrange(6), rng.choice(TAGS)
    return [
        {"project": project},
        {"project": project, "version": version},
        {"sent_at": None},
        {"project": project, "sent_at": None},
        {"tags": tag},
        {"tags": None},
        {"version": version},
        {"version": {"$gte": version}},  # not an equality: mongomock's own scan
    ]


def _expected(collection: Any, filter: dict[str, Any]) -> list[Any]:
    """The ids a scan of the store finds, in its order."""
    return [
        d["_id"]
        for d in collection._store._documents.values()
        if filtering.filter_applies(filter, d)
    ]


def _ids(found: Any) -> list[Any]:
    return [d["_id"] for d in found]


@pytest.mark.parametrize("seed", range(4))
def test_equality_and_id_lookups_answer_as_a_scan_does(seed: int) -> None:
    rng = random.Random(seed)
    collection = mongomock_client(f"lookups-{uuid.uuid4().hex}")["db"]["docs"]
    ids: list[str] = []
    now = dt.datetime.now(dt.UTC)
    for step in range(600):
        action = rng.random()
        if action < 0.35 or not ids:
            doc: dict[str, Any] = {"_id": f"d{step}", "version": rng.randrange(6)}
            for name in ("project", "tags"):
                if rng.random() < 0.85:
                    doc[name] = _value(rng)
            if rng.random() < 0.5:
                doc["sent_at"] = None if rng.random() < 0.5 else now
            collection.insert_one(doc)
            ids.append(doc["_id"])
        elif action < 0.55:
            name = rng.choice(("project", "tags", "sent_at", "version"))
            value = now if name == "sent_at" else _value(rng)
            if rng.random() < 0.5:
                collection.update_one({"_id": rng.choice(ids)}, {"$set": {name: value}})
            else:  # many documents changed in place at once
                collection.update_many({"project": rng.choice(PROJECTS)}, {"$set": {name: value}})
        elif action < 0.62:
            collection.update_one({"_id": rng.choice(ids)}, {"$unset": {"project": ""}})
        elif action < 0.68:
            collection.replace_one(
                {"_id": rng.choice(ids)}, {"project": rng.choice(PROJECTS), "version": 1}
            )
        elif action < 0.75:
            gone = rng.choice(ids)
            collection.delete_one({"_id": gone})
            ids.remove(gone)
        else:
            for filter in _filters(rng):
                found = _ids(collection.find(filter))
                assert found == _expected(collection, filter), (step, filter)
                assert collection.count_documents(filter) == len(found), (step, filter)
    assert _ids(collection.find({"_id": {"$in": ids[:5]}})) == _expected(
        collection, {"_id": {"$in": ids[:5]}}
    )


def test_a_unique_index_still_refuses_duplicates_after_in_place_updates() -> None:
    from pymongo import ASCENDING
    from pymongo.errors import DuplicateKeyError

    collection = mongomock_client(f"unique-{uuid.uuid4().hex}")["db"]["versions"]
    collection.create_index([("project", ASCENDING), ("version", ASCENDING)], unique=True)
    collection.insert_one({"_id": "one", "project": "p", "version": 1})
    collection.insert_one({"_id": "two", "project": "p", "version": 2})
    assert [d["_id"] for d in collection.find({"project": "p"})] == ["one", "two"]
    with pytest.raises(DuplicateKeyError):
        collection.update_one({"_id": "two"}, {"$set": {"version": 1}})
    assert collection.find_one({"_id": "two"})["version"] == 2  # rolled back
    collection.update_one({"_id": "two"}, {"$set": {"version": 3}})
    with pytest.raises(DuplicateKeyError):
        collection.insert_one({"_id": "three", "project": "p", "version": 3})
    assert [d["_id"] for d in collection.find({"project": "p", "version": 3})] == ["two"]
    collection.delete_one({"_id": "one"})
    collection.insert_one({"_id": "one", "project": "p", "version": 1})
    # a re-inserted document comes last, as in mongomock's own order
    assert [d["_id"] for d in collection.find({"project": "p"})] == ["two", "one"]
