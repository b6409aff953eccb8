"""cadpipe.ownership on its real adapters (mongomock or MONGODB_URI, moto): one policy for the
script service and the watcher, with the index lost, re-indexed, or rebuilt while a first
upload is under way."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest

from cadpipe import errors, layout
from cadpipe.adapters import s3
from cadpipe.adapters.owners import BucketOwners, MongoOwnerRecords
from cadpipe.callers import ANONYMOUS, Caller
from cadpipe.ownership import Ownership
from services.scripts import mongo_index
from services.scripts.domain import VersionRecord, s3_metadata
from services.scripts.reindex import reindex
from services.scripts.s3_store import S3ScriptStore

pytestmark = pytest.mark.timeout(60)

ALICE = Caller("alice")
BOB = Caller("bob")


def _put_version(bucket: s3.Bucket, project: str, version: int, owner: str) -> VersionRecord:
    body = f"x = {version}\n".encode()
    record = VersionRecord(
        project,
        version,
        hashlib.sha256(body).hexdigest(),
        len(body),
        dt.datetime.now(dt.UTC),
        owner=owner,
    )
    assert bucket.put_if_absent(
        record.key, body, content_type=layout.SCRIPT_CONTENT_TYPE, metadata=s3_metadata(record)
    )
    return record


@pytest.fixture
def ownership(bucket: s3.Bucket, mongo_db: Any) -> Ownership:
    return Ownership(MongoOwnerRecords(mongo_db), BucketOwners(s3.AsyncBucket(bucket)))


async def test_without_the_index_the_bucket_says_whose_project_it_is(
    ownership: Ownership, bucket: s3.Bucket, unique: str
) -> None:
    _put_version(bucket, unique, 1, "alice")
    assert await ownership.owner_of(unique) == "alice"
    await ownership.check_access(unique, ALICE)
    with pytest.raises(errors.NotFound, match="not found"):
        await ownership.check_access(unique, BOB)
    with pytest.raises(errors.NotFound):
        await ownership.owner_for_upload(unique, BOB)
    # nothing anywhere: no such project, for anyone but an unrestricted caller
    assert await ownership.owner_of(f"{unique}-none") is None
    with pytest.raises(errors.NotFound):
        await ownership.check_access(f"{unique}-none", ALICE)
    await ownership.check_access(f"{unique}-none", ANONYMOUS)


async def test_reindexing_a_lost_project_on_first_listing_keeps_its_owner(
    ownership: Ownership, bucket: s3.Bucket, mongo_db: Any, unique: str
) -> None:
    """ListScripts indexes versions the index lacks (record_version): the project document it
    creates must name the owner S3 records, or the owner is refused everywhere after."""
    record = _put_version(bucket, unique, 1, "alice")
    await mongo_index.MongoProjectIndex(mongo_db).record_version(record)
    assert await MongoOwnerRecords(mongo_db).owner_of(unique) == "alice"
    await ownership.check_access(unique, ALICE)
    with pytest.raises(errors.NotFound):
        await ownership.check_access(unique, BOB)


async def test_a_reindex_during_a_first_upload_leaves_the_project_to_its_uploader(
    ownership: Ownership, bucket: s3.Bucket, mongo_db: Any, unique: str
) -> None:
    # alice's first upload has claimed the project; its put has not landed yet
    assert await ownership.owner_for_upload(unique, ALICE) == "alice"
    report = await reindex(
        S3ScriptStore(s3.AsyncBucket(bucket)),
        mongo_index.MongoProjectIndex(mongo_db),
        mongo_index.MongoOutbox(mongo_db),
        mongo_index.MongoIdempotencyClaims(mongo_db),
        owners=ownership,
        project=unique,
    )
    assert report.versions == 0
    with pytest.raises(errors.NotFound):
        await ownership.owner_for_upload(unique, BOB)
    assert await ownership.owner_for_upload(unique, ALICE) == "alice"
