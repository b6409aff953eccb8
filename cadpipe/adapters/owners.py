"""The adapters of cadpipe.ownership, used by every service that serves a project's data:
the `owner` of MongoDB's `projects` documents, and the owner S3 records on a project's first
script version."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from cadpipe import layout
from cadpipe.adapters.mongo import in_thread
from cadpipe.adapters.s3 import AsyncBucket
from cadpipe.ownership import OWNER_FIELD, PROJECTS, S3_OWNER_METADATA

Doc = dict[str, Any]


class MongoOwnerRecords:
    """{_id: project, owner, latest, ...} in `projects` (the script service's index writes
    the rest of the document)."""

    def __init__(self, db: Database[Doc]) -> None:
        self._projects = db[PROJECTS]

    def _read(self, project: str) -> str | None:
        doc = self._projects.find_one({"_id": project}, {OWNER_FIELD: 1})
        if doc is None:
            return None
        return str(doc.get(OWNER_FIELD) or "")

    async def owner_of(self, project: str) -> str | None:
        return await in_thread(lambda: self._read(project))

    async def claim(self, project: str, owner: str) -> str:
        def blocking() -> str:
            # latest 0 keeps the index's {latest: {$lt: N}} raise matching this document;
            # milliseconds, as MongoDB keeps them, so that a ListProjects cursor compares exactly
            now = dt.datetime.now(dt.UTC)
            now = now.replace(microsecond=now.microsecond // 1000 * 1000)
            try:
                self._projects.update_one(
                    {"_id": project},
                    {
                        "$setOnInsert": {
                            OWNER_FIELD: owner,
                            "latest": 0,
                            "created_at": now,
                            "updated_at": now,
                        }
                    },
                    upsert=True,
                )
            except DuplicateKeyError:
                pass  # a concurrent claim inserted it first: read whose it is
            recorded = self._read(project)
            assert recorded is not None, "a claimed project document disappeared"
            return recorded

        return await in_thread(blocking)

    async def restore(self, project: str, owner: str) -> None:
        await in_thread(
            lambda: self._projects.update_one(
                {"_id": project},
                {"$set": {OWNER_FIELD: owner}, "$setOnInsert": {"latest": 0}},
                upsert=True,
            )
        )


class BucketOwners:
    """One HEAD of input/{p}/{p}_v1.py."""

    def __init__(self, bucket: AsyncBucket) -> None:
        self._bucket = bucket

    async def first_version_owner(self, project: str) -> str | None:
        info = await self._bucket.head(layout.script_key(project, 1))
        if info is None:
            return None
        return info.metadata.get(S3_OWNER_METADATA, "")
