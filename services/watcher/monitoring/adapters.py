"""The monitoring ports over the watcher's own clients: its S3 Bucket, its MongoDB database (the
jobs collection), its NATS connection (JetStream stream and consumer info), and a gRPC health
client of the script service. S3 through AsyncBucket, MongoDB through
cadpipe.adapters.mongo.in_thread (both raise cadpipe.errors.Unavailable when the store fails)."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

import grpc
import pymongo
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js.errors import NotFoundError
from pymongo.database import Database

from cadpipe import layout
from cadpipe.adapters.mongo import in_thread
from cadpipe.adapters.s3 import AsyncBucket
from services.watcher.domain import TERMINAL_STATES, Job
from services.watcher.mongo_jobs import COLLECTION, job_from_doc
from services.watcher.monitoring.ports import ConsumerState, StreamState
from services.watcher.monitoring.reports import STATES
from services.watcher.nats_events import NatsEvents

T = TypeVar("T")
Doc = dict[str, Any]


_thread = in_thread
"""MongoDB calls; the bucket's go through AsyncBucket."""


class BucketProbe:
    def __init__(self, bucket: AsyncBucket) -> None:
        self._bucket = bucket

    async def ping(self) -> None:
        await self._bucket.ping()

    async def count(self, prefix: str, limit: int) -> tuple[int, int, bool]:
        # one more than the bound tells whether there are more
        listed = await self._bucket.list(prefix, limit=limit + 1)
        return min(len(listed), limit), sum(i.size for i in listed[:limit]), len(listed) > limit

    async def script_versions(self, project: str, limit: int) -> tuple[set[int], bool]:
        listed = await self._bucket.list(layout.project_input_prefix(project), limit=limit + 1)
        versions = set()
        for info in listed[:limit]:
            parsed = layout.parse_script_key(info.key)
            if parsed is not None and parsed[0] == project:
                versions.add(parsed[1])
        return versions, len(listed) > limit

    async def put_if_absent(self, key: str, body: bytes) -> bool:
        return await self._bucket.put_if_absent(key, body, content_type="application/octet-stream")

    async def head(self, key: str) -> int | None:
        found = await self._bucket.head(key)
        return None if found is None else found.size

    async def get(self, key: str) -> bytes | None:
        found = await self._bucket.get(key)
        return None if found is None else found.body

    async def delete(self, key: str) -> None:
        await self._bucket.delete(key)


def _since(since: dt.datetime | None) -> Doc:
    return {"uploaded_at": {"$gte": since}} if since is not None else {}


class MongoJobsView:
    """Read-only queries of the jobs collection (services/watcher/mongo_jobs.py owns it)."""

    def __init__(self, db: Database[Doc]) -> None:
        self._jobs = db[COLLECTION]

    async def ping(self) -> None:
        await _thread(lambda: self._jobs.database.command("ping"))

    async def for_project(self, project: str, limit: int) -> tuple[list[Job], bool]:
        def blocking() -> tuple[list[Job], bool]:
            docs = list(
                self._jobs.find({"project": project})
                .sort("version", pymongo.DESCENDING)
                .limit(limit + 1)
            )
            return [job_from_doc(d) for d in docs[:limit]], len(docs) > limit

        return await _thread(blocking)

    async def counts(self, since: dt.datetime | None) -> dict[str, int]:
        def blocking() -> dict[str, int]:
            return {
                state: self._jobs.count_documents({"state": state, **_since(since)})
                for state in STATES
            }

        return await _thread(blocking)

    async def unpublished(self, since: dt.datetime | None) -> int:
        return await _thread(
            lambda: self._jobs.count_documents(
                {
                    "event_published": False,
                    "state": {"$in": list(TERMINAL_STATES)},
                    **_since(since),
                }
            )
        )

    async def recent_decided(self, since: dt.datetime | None, limit: int) -> list[Job]:
        def blocking() -> list[Job]:
            docs = (
                self._jobs.find(
                    {
                        "state": {"$in": list(TERMINAL_STATES)},
                        "detected_at": {"$ne": None},
                        **_since(since),
                    }
                )
                .sort("detected_at", pymongo.DESCENDING)
                .limit(limit)
            )
            return [job_from_doc(d) for d in docs]

        return await _thread(blocking)

    async def index_names(self) -> list[str]:
        return await _thread(lambda: list(self._jobs.index_information()))


class NatsStreamsView:
    def __init__(self, events: NatsEvents) -> None:
        self._events = events

    async def ping(self) -> None:
        await self._events.check()

    async def stream(self, name: str) -> StreamState | None:
        try:
            info = await self._events.jetstream.stream_info(name)
        except NotFoundError:
            return None
        return StreamState(
            subjects=tuple(info.config.subjects or ()),
            messages=int(info.state.messages or 0),
            duplicate_window_seconds=float(info.config.duplicate_window or 0.0),
        )

    async def consumer(self, stream: str, durable: str) -> ConsumerState | None:
        try:
            info = await self._events.jetstream.consumer_info(stream, durable)
        except NotFoundError:
            return None
        return ConsumerState(
            pending=int(info.num_pending or 0),
            ack_pending=int(info.num_ack_pending or 0),
            waiting=int(info.num_waiting or 0),
            ack_wait_seconds=float(info.config.ack_wait or 0.0),
            max_deliver=int(info.config.max_deliver or 0),
        )


class GrpcHealthClient:
    """grpc.health.v1 Check of one service on another process (the script service)."""

    def __init__(self, channel: grpc.aio.Channel, service: str, timeout: float) -> None:
        self._stub = health_pb2_grpc.HealthStub(channel)
        self._service = service
        self._timeout = timeout

    async def __call__(self) -> str:
        try:
            reply = await self._stub.Check(
                health_pb2.HealthCheckRequest(service=self._service), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            return f"{error.code().name} ({error.details() or 'no details'})"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
