"""MongoDB's `generations` (one document per generation, its rounds inside) and `generation_keys`
(one document per project and idempotency key, unique by _id: the first insert wins).

A generation is held by one runner (a generator instance) at a time: `runner` and
`lease_until`, renewed while it runs and released at an orderly stop. Every save is a
compare-and-set on the stored sequence and the runner, so a runner that lost its lease can
never overwrite the state another one moved on. Only operations both pymongo and mongomock
support. Blocking calls run in a thread.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pymongo
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from cadpipe import errors
from cadpipe.adapters.mongo import in_thread
from services.generator import domain
from services.generator.domain import Generation, Round
from services.generator.ports import Expected, Measured

GENERATIONS = "generations"
KEYS = "generation_keys"


def _utc(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _expected_doc(e: Expected | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {
        "bbox_mm": list(e.bbox_mm) if e.bbox_mm else None,
        "bbox_tolerance_mm": e.bbox_tolerance_mm,
        "volume_mm3": e.volume_mm3,
        "volume_tolerance": e.volume_tolerance,
        "solids": e.solids,
    }


def _expected(doc: Any) -> Expected | None:
    if not isinstance(doc, dict):
        return None
    box = doc.get("bbox_mm")
    return Expected(
        bbox_mm=(float(box[0]), float(box[1]), float(box[2])) if box else None,
        bbox_tolerance_mm=float(doc.get("bbox_tolerance_mm") or 0.5),
        volume_mm3=doc.get("volume_mm3"),
        volume_tolerance=float(doc.get("volume_tolerance") or 0.02),
        solids=doc.get("solids"),
    )


def _measured_doc(m: Measured | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {
        "bbox_mm": list(m.bbox_mm),
        "volume_mm3": m.volume_mm3,
        "area_mm2": m.area_mm2,
        "solids": m.solids,
        "valid": m.valid,
    }


def _measured(doc: Any) -> Measured | None:
    if not isinstance(doc, dict):
        return None
    box = doc.get("bbox_mm") or (0.0, 0.0, 0.0)
    return Measured(
        bbox_mm=(float(box[0]), float(box[1]), float(box[2])),
        volume_mm3=float(doc.get("volume_mm3", 0.0)),
        area_mm2=float(doc.get("area_mm2", 0.0)),
        solids=int(doc.get("solids", 0)),
        valid=bool(doc.get("valid", False)),
    )


def _round_doc(r: Round) -> dict[str, Any]:
    return {
        "round": r.round,
        "state": r.state,
        "version": r.version,
        "feedback": r.feedback,
        "script": r.script,
        "measured": _measured_doc(r.measured),
        "provider": r.provider,
        "model": r.model,
        "tokens_in": r.tokens_in,
        "tokens_out": r.tokens_out,
        "cost_usd": r.cost_usd,
        "latency_seconds": r.latency_seconds,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "expected": _expected_doc(r.expected),
    }


def _round(doc: dict[str, Any]) -> Round:
    return Round(
        round=int(doc["round"]),
        state=str(doc.get("state", domain.WRITING)),
        version=int(doc.get("version", 0)),
        feedback=str(doc.get("feedback", "")),
        script=str(doc.get("script", "")),
        measured=_measured(doc.get("measured")),
        provider=str(doc.get("provider", "")),
        model=str(doc.get("model", "")),
        tokens_in=int(doc.get("tokens_in", 0)),
        tokens_out=int(doc.get("tokens_out", 0)),
        cost_usd=float(doc.get("cost_usd", 0.0)),
        latency_seconds=float(doc.get("latency_seconds", 0.0)),
        started_at=_utc(doc.get("started_at")),
        finished_at=_utc(doc.get("finished_at")),
        expected=_expected(doc.get("expected")),
    )


def to_document(g: Generation) -> dict[str, Any]:
    return {
        "_id": g.id,
        "project": g.project,
        "prompt": g.prompt,
        "caller": g.caller,
        "caller_admin": g.caller_admin,
        "created_at": g.created_at,
        "deadline_at": g.deadline_at,
        "expected": _expected_doc(g.expected),
        "parent_version": g.parent_version,
        "max_rounds": g.max_rounds,
        "state": g.state,
        "terminal": g.terminal,
        "result_version": g.result_version,
        "error": g.error,
        "provider": g.provider,
        "model": g.model,
        "rounds": [_round_doc(r) for r in g.rounds],
        "updated_at": g.updated_at,
        "finished_at": g.finished_at,
        "idempotency_key": g.idempotency_key,
        "sequence": g.sequence,
    }


def from_document(doc: dict[str, Any]) -> Generation:
    created = _utc(doc["created_at"])
    deadline = _utc(doc["deadline_at"])
    assert created is not None and deadline is not None
    return Generation(
        id=str(doc["_id"]),
        project=str(doc["project"]),
        prompt=str(doc["prompt"]),
        caller=str(doc.get("caller", "")),
        caller_admin=bool(doc.get("caller_admin", False)),
        created_at=created,
        deadline_at=deadline,
        expected=_expected(doc.get("expected")),
        parent_version=int(doc.get("parent_version", 0)),
        max_rounds=int(doc.get("max_rounds", 3)),
        state=str(doc.get("state", domain.QUEUED)),
        result_version=int(doc.get("result_version", 0)),
        error=str(doc.get("error", "")),
        provider=str(doc.get("provider", "")),
        model=str(doc.get("model", "")),
        rounds=tuple(_round(r) for r in doc.get("rounds", [])),
        updated_at=_utc(doc.get("updated_at")),
        finished_at=_utc(doc.get("finished_at")),
        idempotency_key=str(doc.get("idempotency_key", "")),
        sequence=int(doc.get("sequence", 0)),
    )


def _key_id(project: str, key: str) -> str:
    return f"{project}/{key}"


class MongoGenerations:
    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self._db = db
        self._generations = db[GENERATIONS]
        self._keys = db[KEYS]

    def ensure_indexes(self) -> None:
        self._generations.create_index(
            [("project", pymongo.ASCENDING), ("created_at", pymongo.DESCENDING)]
        )
        self._generations.create_index(
            [("terminal", pymongo.ASCENDING), ("lease_until", pymongo.ASCENDING)]
        )

    def ping(self) -> None:
        self._db.command("ping")

    async def insert(
        self, generation: Generation, *, runner: str, lease_until: dt.datetime
    ) -> Generation | None:
        def blocking() -> Generation | None:
            doc = {**to_document(generation), "runner": runner, "lease_until": lease_until}
            self._generations.insert_one(doc)
            if not generation.idempotency_key:
                return None
            key_id = _key_id(generation.project, generation.idempotency_key)
            try:
                self._keys.insert_one({"_id": key_id, "generation": generation.id})
                return None
            except DuplicateKeyError:
                self._generations.delete_one({"_id": generation.id})
            held = self._keys.find_one({"_id": key_id}) or {}
            first = self._generations.find_one({"_id": held.get("generation")})
            if first is None:
                raise errors.Conflict(
                    "this idempotency key started a generation that is not stored; retry "
                    "with another key"
                )
            return from_document(first)

        return await in_thread(blocking)

    async def save(self, generation: Generation, *, runner: str, lease_until: dt.datetime) -> bool:
        def blocking() -> bool:
            result = self._generations.update_one(
                {"_id": generation.id, "sequence": generation.sequence - 1, "runner": runner},
                {"$set": {**to_document(generation), "lease_until": lease_until}},
            )
            return result.matched_count == 1

        return await in_thread(blocking)

    async def get(self, project: str, generation_id: str) -> Generation | None:
        def blocking() -> Generation | None:
            doc = self._generations.find_one({"_id": generation_id, "project": project})
            return from_document(doc) if doc else None

        return await in_thread(blocking)

    async def page(self, project: str, *, limit: int, after: str) -> tuple[list[Generation], str]:
        try:
            skip = int(base64.urlsafe_b64decode(after.encode()).decode()) if after else 0
            if skip < 0:
                raise ValueError
        except ValueError:
            raise errors.InvalidArgument(
                "page_token: not a token this service gave", field="page_token"
            ) from None

        def blocking() -> list[Generation]:
            cursor = (
                self._generations.find({"project": project})
                .sort([("created_at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)])
                .skip(skip)
                .limit(limit + 1)
            )
            return [from_document(d) for d in cursor]

        found = await in_thread(blocking)
        token = ""
        if len(found) > limit:
            found = found[:limit]
            token = base64.urlsafe_b64encode(str(skip + limit).encode()).decode()
        return found, token

    async def claim_lapsed(
        self, runner: str, *, now: dt.datetime, until: dt.datetime, limit: int
    ) -> list[Generation]:
        def blocking() -> list[Generation]:
            claimed = []
            candidates = self._generations.find(
                {"terminal": False, "lease_until": {"$lt": now}}, {"_id": 1, "lease_until": 1}
            ).limit(limit)
            for doc in list(candidates):
                taken = self._generations.find_one_and_update(
                    {"_id": doc["_id"], "terminal": False, "lease_until": doc["lease_until"]},
                    {"$set": {"runner": runner, "lease_until": until}},
                    return_document=pymongo.ReturnDocument.AFTER,
                )
                if taken is not None:
                    claimed.append(from_document(taken))
            return claimed

        return await in_thread(blocking)

    async def renew(self, runner: str, ids: list[str], *, until: dt.datetime) -> None:
        if not ids:
            return
        await in_thread(
            lambda: self._generations.update_many(
                {"_id": {"$in": ids}, "runner": runner, "terminal": False},
                {"$set": {"lease_until": until}},
            )
        )

    async def release(self, runner: str, *, now: dt.datetime) -> None:
        await in_thread(
            lambda: self._generations.update_many(
                {"runner": runner, "terminal": False},
                {"$set": {"lease_until": now - dt.timedelta(seconds=1)}},
            )
        )

    async def since(self, created_after: dt.datetime | None) -> list[Generation]:
        query: dict[str, Any] = (
            {} if created_after is None else {"created_at": {"$gte": created_after}}
        )
        return await in_thread(
            lambda: [from_document(d) for d in self._generations.find(query, {"rounds.script": 0})]
        )
