"""ListProjects over MongoDB (mongomock, or the server MONGODB_URI names): an owner's projects
by newest activity, a page at a time, each once; every project for an unrestricted caller."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from cadpipe import errors
from cadpipe.adapters.owners import MongoOwnerRecords
from services.scripts import mongo_index
from services.scripts.domain import (
    ProjectCursor,
    VersionRecord,
    decode_projects_token,
    encode_projects_token,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def record(project: str, version: int, owner: str) -> VersionRecord:
    return VersionRecord(
        project=project,
        version=version,
        sha256="0" * 64,
        size_bytes=1,
        uploaded_at=T0,
        owner=owner,
    )


async def test_an_owners_projects_newest_activity_first_a_page_at_a_time(mongo_db: Any) -> None:
    mongo_index.ensure_indexes(mongo_db)
    index = mongo_index.MongoProjectIndex(mongo_db)
    owners = MongoOwnerRecords(mongo_db)
    for project, owner in [("a", "alice"), ("b", "bob"), ("c", "alice"), ("d", "alice")]:
        await owners.claim(project, owner)
        await index.record_version(record(project, 1, owner))
    await index.record_version(record("a", 2, "alice"))  # a: the newest activity

    everything = await index.list_projects("alice", None, 10)
    assert everything[0].project == "a"
    assert sorted(p.project for p in everything) == ["a", "c", "d"]
    assert everything[0].latest == 2 and everything[0].created_at is not None

    pages: list[str] = []
    after = None
    while True:
        page = await index.list_projects("alice", after, 1)
        if not page:
            break
        pages += [p.project for p in page]
        after = decode_projects_token(
            encode_projects_token(ProjectCursor(page[-1].updated_at, page[-1].project))
        )
    assert pages == [p.project for p in everything]
    assert {p.project for p in await index.list_projects(None, None, 10)} == {"a", "b", "c", "d"}


def test_a_page_token_not_made_by_the_listing_is_refused() -> None:
    assert decode_projects_token("") is None
    with pytest.raises(errors.InvalidArgument):
        decode_projects_token("bm9wZQ")
