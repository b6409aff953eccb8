"""The script service's MongoDB collections, behind the ports of ports.py.

    projects     {_id: project, latest, latest_key, created_at, updated_at,
                  owner (cadpipe.ownership)}
    versions     {_id: "{project}.v{N}", project, version, key, sha256, size_bytes,
                  uploaded_at, content_type, metadata, idempotency_key, upload_id}
                                                                  unique (project, version)
    outbox       {_id: Nats-Msg-Id, subject, payload, project, version, created_at,
                  sent_at (null until JetStream acknowledged), attempts, last_error}
    idempotency  {project, key, owner, fingerprint, created_at, from_version, state, version}
                                                                  unique (project, key)

Only operations that both pymongo and mongomock implement. Blocking calls run through
cadpipe.adapters.mongo.in_thread (MongoDB failures become cadpipe.errors.Unavailable).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from cadpipe import errors, layout, messaging, ownership
from cadpipe.adapters.mongo import in_thread as _call
from services.scripts.domain import (
    Claim,
    OutboxEntry,
    ProjectCursor,
    ProjectSummary,
    VersionRecord,
)

Doc = dict[str, Any]

PROJECTS = ownership.PROJECTS
VERSIONS = "versions"
OUTBOX = "outbox"
IDEMPOTENCY = "idempotency"


def ensure_indexes(db: Database[Doc]) -> None:
    """Idempotent; every replica runs it at start."""
    db[VERSIONS].create_index([("project", ASCENDING), ("version", ASCENDING)], unique=True)
    db[IDEMPOTENCY].create_index([("project", ASCENDING), ("key", ASCENDING)], unique=True)
    db[OUTBOX].create_index([("sent_at", ASCENDING), ("created_at", ASCENDING)])
    # ListProjects: an owner's projects by newest activity
    db[PROJECTS].create_index(
        [(ownership.OWNER_FIELD, ASCENDING), ("updated_at", DESCENDING), ("_id", ASCENDING)]
    )
    # sent entries go away with the stream's retention; pending ones (sent_at null) never do
    db[OUTBOX].create_index(
        "sent_at", name="sent_at_ttl", expireAfterSeconds=messaging.RETENTION_SECONDS
    )


def _now() -> dt.datetime:
    # milliseconds, as MongoDB keeps them, so that a ListProjects cursor compares exactly
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def version_id(project: str, version: int) -> str:
    return f"{project}.v{version}"


def version_doc(record: VersionRecord) -> Doc:
    return {
        "project": record.project,
        "version": record.version,
        "key": record.key,
        "sha256": record.sha256,
        "size_bytes": record.size_bytes,
        "uploaded_at": record.uploaded_at,
        "content_type": record.content_type,
        "metadata": dict(record.metadata),
        "idempotency_key": record.idempotency_key,
        "upload_id": record.upload_id,
        "owner": record.owner,
    }


def record_from_doc(doc: Doc) -> VersionRecord:
    return VersionRecord(
        project=doc["project"],
        version=int(doc["version"]),
        sha256=doc["sha256"],
        size_bytes=int(doc["size_bytes"]),
        uploaded_at=_utc(doc["uploaded_at"]),
        metadata=dict(doc.get("metadata") or {}),
        idempotency_key=doc.get("idempotency_key", ""),
        content_type=doc.get("content_type") or layout.SCRIPT_CONTENT_TYPE,
        upload_id=doc.get("upload_id", ""),
        owner=doc.get("owner", ""),
    )


class MongoProjectIndex:
    def __init__(self, db: Database[Doc]) -> None:
        self._projects = db[PROJECTS]
        self._versions = db[VERSIONS]

    async def latest_version(self, project: str) -> int:
        doc = await _call(lambda: self._projects.find_one({"_id": project}, {"latest": 1}))
        return int(doc["latest"]) if doc else 0

    async def owner_and_latest(self, project: str) -> tuple[str | None, int]:
        doc = await _call(
            lambda: self._projects.find_one(
                {"_id": project}, {"latest": 1, ownership.OWNER_FIELD: 1}
            )
        )
        if doc is None:
            return None, 0
        return str(doc.get(ownership.OWNER_FIELD) or ""), int(doc.get("latest") or 0)

    async def record_version(self, record: VersionRecord) -> None:
        def blocking() -> None:
            # keyed by _id: an update by _id is cheap on mongomock as well as on MongoDB
            by_id = {"_id": version_id(record.project, record.version)}
            update = {"$set": version_doc(record)}
            try:
                self._versions.update_one(by_id, update, upsert=True)
            except DuplicateKeyError:  # two upserts raced to insert: the other one did
                self._versions.update_one(by_id, update)
            self._raise_latest(record)

        await _call(blocking)

    async def record_versions(self, records: Sequence[VersionRecord]) -> None:
        """record_version for many at once: one insert of the version documents (a version is
        immutable: a document already there describes the same object), one raise of each
        project's latest."""
        if len(records) == 1:
            return await self.record_version(records[0])

        def blocking() -> None:
            documents = [
                {"_id": version_id(r.project, r.version), **version_doc(r)} for r in records
            ]
            try:
                self._versions.insert_many(documents, ordered=False)
            except BulkWriteError as error:
                _only_duplicates(error)  # indexed already (a retry, a listing that healed it)
            highest: dict[str, VersionRecord] = {}
            for r in records:
                if r.project not in highest or r.version > highest[r.project].version:
                    highest[r.project] = r
            for r in highest.values():
                self._raise_latest(r)

        await _call(blocking)

    def _raise_latest(self, record: VersionRecord) -> None:
        # Matches only a lower latest (or no document): a higher one stays. With a higher one
        # present the upsert's insert collides on _id, which means the same.
        try:
            self._projects.update_one(
                {"_id": record.project, "latest": {"$lt": record.version}},
                {
                    "$set": {
                        "latest": record.version,
                        "latest_key": record.key,
                        "updated_at": _now(),
                    },
                    # a document made here (the index lost) records whose project it is, as S3
                    # does on every version: without it the owner would be refused
                    "$setOnInsert": {ownership.OWNER_FIELD: record.owner, "created_at": _now()},
                },
                upsert=True,
            )
        except DuplicateKeyError:
            pass

    async def versions(self, project: str, first: int, last: int) -> dict[int, VersionRecord]:
        def blocking() -> dict[int, VersionRecord]:
            cursor = self._versions.find(
                {"project": project, "version": {"$gte": first, "$lte": last}}
            )
            return {int(doc["version"]): record_from_doc(doc) for doc in cursor}

        return await _call(blocking)

    async def get_version(self, project: str, version: int) -> VersionRecord | None:
        doc = await _call(lambda: self._versions.find_one({"_id": version_id(project, version)}))
        return record_from_doc(doc) if doc else None

    async def projects(self) -> list[str]:
        return await _call(lambda: [str(doc["_id"]) for doc in self._projects.find({}, {"_id": 1})])

    async def list_projects(
        self, owner: str | None, after: ProjectCursor | None, limit: int
    ) -> list[ProjectSummary]:
        def blocking() -> list[ProjectSummary]:
            query: Doc = {} if owner is None else {ownership.OWNER_FIELD: owner}
            if after is not None:
                query["$or"] = [
                    {"updated_at": {"$lt": after.updated_at}},
                    {"updated_at": after.updated_at, "_id": {"$gt": after.project}},
                ]
            cursor = (
                self._projects.find(query, {"latest": 1, "created_at": 1, "updated_at": 1})
                .sort([("updated_at", DESCENDING), ("_id", ASCENDING)])
                .limit(limit)
            )
            return [_summary(doc) for doc in cursor]

        return await _call(blocking)

    async def reset_project(self, project: str, latest: int) -> None:
        def blocking() -> None:
            # The document stays even at latest 0: it may hold the claim of a first upload
            # whose put has not landed yet, and deleting it would let another identity claim.
            self._versions.delete_many({"project": project, "version": {"$gt": latest}})
            self._projects.update_one(
                {"_id": project},
                {
                    "$set": {
                        "latest": latest,
                        "latest_key": layout.script_key(project, latest) if latest else "",
                        "updated_at": _now(),
                    }
                },
                upsert=latest > 0,
            )

        await _call(blocking)


def _summary(doc: Doc) -> ProjectSummary:
    created = doc.get("created_at")
    updated = doc.get("updated_at") or created or dt.datetime.fromtimestamp(0, dt.UTC)
    return ProjectSummary(
        project=str(doc["_id"]),
        latest=int(doc.get("latest") or 0),
        updated_at=_utc(updated),
        created_at=_utc(created) if created else None,
    )


def _only_duplicates(error: BulkWriteError) -> list[int]:
    """The indexes of the bulk write's duplicate-key failures; any other failure is raised."""
    failures = error.details.get("writeErrors", [])
    if any(failure.get("code") != DUPLICATE_KEY for failure in failures):
        raise error
    return [int(failure["index"]) for failure in failures]


DUPLICATE_KEY = 11000


def _outbox_doc(entry: OutboxEntry, now: dt.datetime) -> Doc:
    return {
        "_id": entry.msg_id,
        "subject": entry.subject,
        "payload": entry.payload.decode(),
        "project": entry.project,
        "version": entry.version,
        "request_id": entry.request_id,
        "created_at": now,
        "sent_at": None,
        "attempts": 0,
    }


def _entry(doc: Doc) -> OutboxEntry:
    return OutboxEntry(
        msg_id=doc["_id"],
        subject=doc["subject"],
        payload=doc["payload"].encode(),
        project=doc["project"],
        version=int(doc["version"]),
        request_id=str(doc.get("request_id", "")),
    )


class MongoOutbox:
    """Both sides of the outbox: the use case adds, the publisher reads and marks."""

    def __init__(self, db: Database[Doc]) -> None:
        self._outbox = db[OUTBOX]

    async def add(self, entry: OutboxEntry) -> None:
        def blocking() -> None:
            try:
                self._outbox.insert_one(_outbox_doc(entry, _now()))
            except DuplicateKeyError:
                pass  # recorded already (a retry, a reindex): one entry per message id

        await _call(blocking)

    async def add_many(self, entries: Sequence[OutboxEntry]) -> None:
        """add for many at once: one insert of all of them."""
        if len(entries) == 1:
            return await self.add(entries[0])
        now = _now()

        def blocking() -> None:
            try:
                self._outbox.insert_many([_outbox_doc(e, now) for e in entries], ordered=False)
            except BulkWriteError as error:
                _only_duplicates(error)  # recorded already: one entry per message id

        await _call(blocking)

    async def contains(self, msg_ids: Sequence[str]) -> set[str]:
        if not msg_ids:
            return set()
        return await _call(
            lambda: {
                str(doc["_id"])
                for doc in self._outbox.find({"_id": {"$in": list(msg_ids)}}, {"_id": 1})
            }
        )

    async def pending(self, limit: int) -> list[OutboxEntry]:
        return await _call(
            lambda: [
                _entry(doc)
                for doc in self._outbox.find({"sent_at": None})
                .sort("created_at", ASCENDING)
                .limit(limit)
            ]
        )

    async def mark_sent(self, msg_ids: Sequence[str]) -> None:
        def blocking() -> None:
            update = {"$set": {"sent_at": _now()}}
            if len(msg_ids) == 1:  # the usual case; an _id match is cheap on mongomock too
                self._outbox.update_one({"_id": msg_ids[0]}, update)
            else:
                self._outbox.update_many({"_id": {"$in": list(msg_ids)}}, update)

        await _call(blocking)

    async def note_failure(self, msg_ids: Sequence[str], error: str) -> None:
        await _call(
            lambda: self._outbox.update_many(
                {"_id": {"$in": list(msg_ids)}, "sent_at": None},
                {"$inc": {"attempts": 1}, "$set": {"last_error": error[:500]}},
            )
        )

    def pending_count(self) -> int:
        """Blocking, for the metrics thread; -1 when MongoDB does not answer."""
        try:
            return self._outbox.count_documents({"sent_at": None})
        except PyMongoError:
            return -1


def _claim(doc: Doc) -> Claim:
    return Claim(
        project=doc["project"],
        key=doc["key"],
        owner=doc.get("owner", ""),
        fingerprint=doc.get("fingerprint", ""),
        created_at=_utc(doc["created_at"]),
        from_version=int(doc.get("from_version", 0)),
        state="done" if doc.get("state") == "done" else "pending",
        version=int(doc.get("version", 0)),
    )


class MongoIdempotencyClaims:
    def __init__(self, db: Database[Doc]) -> None:
        self._claims = db[IDEMPOTENCY]

    async def claim(self, claim: Claim) -> Claim | None:
        def blocking() -> Claim | None:
            for _ in range(5):  # the holder may let go between our insert and our read
                try:
                    self._claims.insert_one(
                        {
                            "project": claim.project,
                            "key": claim.key,
                            "owner": claim.owner,
                            "fingerprint": claim.fingerprint,
                            "created_at": claim.created_at,
                            "from_version": claim.from_version,
                            "state": "pending",
                            "version": 0,
                        }
                    )
                    return None
                except DuplicateKeyError:
                    doc = self._claims.find_one({"project": claim.project, "key": claim.key})
                    if doc is not None:
                        return _claim(doc)
            raise errors.Unavailable(f"idempotency key {claim.key!r} keeps changing hands")

        return await _call(blocking)

    async def get(self, project: str, key: str) -> Claim | None:
        doc = await _call(lambda: self._claims.find_one({"project": project, "key": key}))
        return _claim(doc) if doc else None

    async def take_over(self, stale: Claim, replacement: Claim) -> bool:
        result = await _call(
            lambda: self._claims.update_one(
                {
                    "project": stale.project,
                    "key": stale.key,
                    "owner": stale.owner,
                    "state": "pending",
                },
                {
                    "$set": {
                        "owner": replacement.owner,
                        "created_at": replacement.created_at,
                        "from_version": replacement.from_version,
                    }
                },
            )
        )
        return result.modified_count == 1

    async def complete(self, project: str, key: str, owner: str, version: int) -> None:
        await _call(
            lambda: self._claims.update_one(
                {"project": project, "key": key, "owner": owner},
                {"$set": {"state": "done", "version": version}},
            )
        )

    async def release(self, project: str, key: str, owner: str) -> None:
        await _call(
            lambda: self._claims.delete_one(
                {"project": project, "key": key, "owner": owner, "state": "pending"}
            )
        )

    async def restore(self, project: str, key: str, fingerprint: str, version: int) -> None:
        def blocking() -> None:
            doc = self._claims.find_one({"project": project, "key": key})
            if doc and doc.get("state") == "done" and 0 < int(doc.get("version", 0)) <= version:
                return
            fields = {
                "project": project,
                "key": key,
                "owner": "reindex",
                "fingerprint": fingerprint,
                "from_version": version - 1,
                "state": "done",
                "version": version,
            }
            try:
                self._claims.update_one(
                    {"project": project, "key": key},
                    {"$set": fields, "$setOnInsert": {"created_at": _now()}},
                    upsert=True,
                )
            except DuplicateKeyError:
                pass  # a live upload claimed it meanwhile; it will find its version in S3

        await _call(blocking)
