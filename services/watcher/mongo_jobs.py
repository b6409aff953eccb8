"""The jobs collection in MongoDB: one document per project and version (unique index).

    {project, version, state, script_key, uploaded_at, started_at, outputs: [...], log_key,
     error, exit_reason, finished_at, detected_at, duration_seconds, event_published,
     owner, lease_until, project_owner}

(owner/lease_until: the watcher replica polling the job; project_owner: the identity owning
the project, from the uploaded event.)

* A job is added by an upsert that only inserts ($setOnInsert): a redelivered uploaded event
  changes nothing.
* Its state moves by compare-and-set: queued -> processing with
  update_one({..., state: "queued"}, ...), and to a terminal state with
  update_one({project, version, state: {$in: ["queued", "processing"]}}, ...), which matches
  for exactly one caller, whichever replica and however many race; only that caller
  publishes. The same update records event_published: false, and the event is marked published
  after JetStream acknowledged it, so a crash in between leaves a visible, re-publishable job.
* owner/lease_until say which replica polls a pending (queued or processing) job, so that the
  S3 cost does not grow with the number of replicas; the compare-and-set, not the lease,
  keeps decisions single.

Only operations both pymongo and mongomock implement. Blocking calls run through
cadpipe.adapters.mongo.in_thread (MongoDB failures become cadpipe.errors.Unavailable).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

import pymongo
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from cadpipe.adapters.mongo import in_thread
from cadpipe.marker import MarkerOutput
from services.watcher.domain import (
    PENDING_STATES,
    PROCESSING,
    QUEUED,
    TERMINAL_STATES,
    Job,
    check_transition,
)

COLLECTION = "jobs"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

T = TypeVar("T")
Doc = dict[str, Any]


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # Real MongoDB and mongomock both hand back aware datetimes (tz_aware=True); a naive one
    # would be UTC.
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _job_from_doc(doc: Doc) -> Job:
    uploaded_at = _utc(doc.get("uploaded_at")) or EPOCH
    return Job(
        project=doc["project"],
        version=int(doc["version"]),
        state=doc["state"],
        uploaded_at=uploaded_at,
        script_key=doc.get("script_key", ""),
        outputs=tuple(MarkerOutput(**o) for o in doc.get("outputs", [])),
        log_key=doc.get("log_key", ""),
        error=doc.get("error", ""),
        exit_reason=doc.get("exit_reason", ""),
        finished_at=_utc(doc.get("finished_at")),
        detected_at=_utc(doc.get("detected_at")),
        duration_seconds=float(doc.get("duration_seconds", 0.0)),
        event_published=bool(doc.get("event_published", False)),
        project_owner=str(doc.get("project_owner", "")),
        started_at=_utc(doc.get("started_at")),
    )


job_from_doc = _job_from_doc
"""For other read-only views of the collection (monitoring/adapters.py)."""


def _outputs_doc(job: Job) -> list[Doc]:
    return [
        {
            "key": o.key,
            "name": o.name,
            "format": o.format,
            "size_bytes": o.size_bytes,
            "sha256": o.sha256,
            "content_type": o.content_type,
        }
        for o in job.outputs
    ]


class MongoJobs:
    def __init__(self, db: Database[Doc]) -> None:
        self._jobs: Collection[Doc] = db[COLLECTION]

    _call = staticmethod(in_thread)

    async def ensure_indexes(self) -> None:
        def blocking() -> None:
            self._jobs.create_index(
                [("project", pymongo.ASCENDING), ("version", pymongo.ASCENDING)],
                unique=True,
                name="project_version",
            )
            self._jobs.create_index(
                [("state", pymongo.ASCENDING), ("lease_until", pymongo.ASCENDING)],
                name="state_lease",
            )
            self._jobs.create_index(
                [("event_published", pymongo.ASCENDING), ("detected_at", pymongo.ASCENDING)],
                name="unpublished",
            )

        await self._call(blocking)

    async def ping(self) -> None:
        await self._call(lambda: self._jobs.database.command("ping"))

    async def add(self, job: Job, *, owner: str, lease_until: dt.datetime) -> tuple[Job, str]:
        def blocking() -> tuple[Job, str]:
            key = {"project": job.project, "version": job.version}
            fields = {
                **key,
                "state": job.state,
                "script_key": job.script_key,
                "uploaded_at": job.uploaded_at,
                "outputs": [],
                "event_published": False,
                "owner": owner,
                "lease_until": lease_until,
                "project_owner": job.project_owner,
            }
            try:
                result = self._jobs.update_one(key, {"$setOnInsert": fields}, upsert=True)
                if result.upserted_id is not None:
                    return job, owner
            except DuplicateKeyError:
                pass  # a concurrent insert of the same version won; read what it stored
            doc = self._jobs.find_one(key)
            assert doc is not None, "an upserted job document disappeared"
            return _job_from_doc(doc), str(doc.get("owner", ""))

        return await self._call(blocking)

    async def start(self, job: Job) -> bool:
        check_transition(QUEUED, job.state)

        def blocking() -> bool:
            result = self._jobs.update_one(
                {"project": job.project, "version": job.version, "state": QUEUED},
                {"$set": {"state": PROCESSING, "started_at": job.started_at}},
            )
            return result.matched_count == 1

        return await self._call(blocking)

    async def finish(self, job: Job) -> bool:
        check_transition(PROCESSING, job.state)

        def blocking() -> bool:
            result = self._jobs.update_one(
                {
                    "project": job.project,
                    "version": job.version,
                    "state": {"$in": list(PENDING_STATES)},
                },
                {
                    "$set": {
                        "state": job.state,
                        "outputs": _outputs_doc(job),
                        "log_key": job.log_key,
                        "error": job.error,
                        "exit_reason": job.exit_reason,
                        "finished_at": job.finished_at,
                        "detected_at": job.detected_at,
                        "duration_seconds": job.duration_seconds,
                        "event_published": False,
                    },
                    "$unset": {"owner": "", "lease_until": ""},
                },
            )
            return result.matched_count == 1

        return await self._call(blocking)

    async def mark_published(self, project: str, version: int) -> None:
        await self._call(
            lambda: self._jobs.update_one(
                {"project": project, "version": version}, {"$set": {"event_published": True}}
            )
        )

    async def unpublished(self, *, decided_before: dt.datetime, limit: int) -> list[Job]:
        def blocking() -> list[Job]:
            docs = self._jobs.find(
                {
                    "event_published": False,
                    "state": {"$in": list(TERMINAL_STATES)},
                    "detected_at": {"$lt": decided_before},
                }
            ).limit(limit)
            return [_job_from_doc(d) for d in docs]

        return await self._call(blocking)

    async def renew_leases(self, owner: str, *, until: dt.datetime) -> int:
        def blocking() -> int:
            result = self._jobs.update_many(
                {"owner": owner, "state": {"$in": list(PENDING_STATES)}},
                {"$set": {"lease_until": until}},
            )
            return result.modified_count

        return await self._call(blocking)

    async def claim_lapsed(
        self, owner: str, *, now: dt.datetime, until: dt.datetime, limit: int
    ) -> list[Job]:
        def blocking() -> list[Job]:
            candidates = list(
                self._jobs.find(
                    {
                        "state": {"$in": list(PENDING_STATES)},
                        "$or": [{"lease_until": {"$lt": now}}, {"owner": owner}],
                    }
                ).limit(limit)
            )
            claimed: list[Job] = []
            for doc in candidates:
                # Compare-and-set on the lease we read: of two replicas claiming the same
                # lapsed job, one matches.
                taken = self._jobs.update_one(
                    {
                        "_id": doc["_id"],
                        "state": {"$in": list(PENDING_STATES)},
                        "owner": doc.get("owner"),
                        "lease_until": doc.get("lease_until"),
                    },
                    {"$set": {"owner": owner, "lease_until": until}},
                )
                if taken.matched_count == 1:
                    claimed.append(_job_from_doc(doc))
            return claimed

        return await self._call(blocking)

    async def release(self, owner: str) -> int:
        def blocking() -> int:
            result = self._jobs.update_many(
                {"owner": owner, "state": {"$in": list(PENDING_STATES)}},
                {"$set": {"lease_until": EPOCH}},
            )
            return result.modified_count

        return await self._call(blocking)

    async def get(self, project: str, version: int) -> Job | None:
        def blocking() -> Job | None:
            doc = self._jobs.find_one({"project": project, "version": version})
            return _job_from_doc(doc) if doc else None

        return await self._call(blocking)

    async def latest(self, project: str, *, state: str | None = None) -> Job | None:
        def blocking() -> Job | None:
            query: Doc = {"project": project}
            if state is not None:
                query["state"] = state
            docs = list(self._jobs.find(query).sort("version", pymongo.DESCENDING).limit(1))
            return _job_from_doc(docs[0]) if docs else None

        return await self._call(blocking)
