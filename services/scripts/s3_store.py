"""ScriptStore over cadpipe's AsyncBucket (which runs boto3 in a thread and raises
cadpipe.errors.Unavailable when S3 fails)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cadpipe import layout
from cadpipe.adapters.s3 import AsyncBucket
from services.scripts.domain import VersionRecord, record_from_s3, s3_metadata


class S3ScriptStore:
    def __init__(
        self, bucket: AsyncBucket, *, on_conflict: Callable[[], None] = lambda: None
    ) -> None:
        self._bucket = bucket
        self._on_conflict = on_conflict

    async def put_if_absent(self, record: VersionRecord, body: bytes) -> bool:
        stored = await self._bucket.put_if_absent(
            record.key, body, content_type=record.content_type, metadata=s3_metadata(record)
        )
        if not stored:
            self._on_conflict()
        return stored

    async def exists(self, project: str, version: int) -> bool:
        return await self._bucket.exists(layout.script_key(project, version))

    async def describe(self, project: str, version: int) -> VersionRecord | None:
        def blocking() -> VersionRecord | None:
            info = self._bucket.blocking.head(layout.script_key(project, version))
            if info is None:
                return None
            if "sha256" not in info.metadata:  # written before cadpipe: hash the body
                found = self._read(project, version)
                return found[0] if found else None
            return record_from_s3(
                project,
                version,
                metadata=info.metadata,
                size_bytes=info.size,
                content_type=info.content_type,
                last_modified=info.last_modified,
            )

        return await self._bucket.run(blocking)

    def _read(self, project: str, version: int) -> tuple[VersionRecord, bytes] | None:
        stored = self._bucket.blocking.get(layout.script_key(project, version))
        if stored is None:
            return None
        record = record_from_s3(
            project,
            version,
            metadata=stored.metadata,
            size_bytes=len(stored.body),
            content_type=stored.content_type,
            last_modified=stored.last_modified,
            sha256=hashlib.sha256(stored.body).hexdigest(),
        )
        return record, stored.body

    async def read(self, project: str, version: int) -> tuple[VersionRecord, bytes] | None:
        return await self._bucket.run(lambda: self._read(project, version))

    async def list_keys(
        self, prefix: str, *, start_after: str = "", limit: int = 1000
    ) -> list[str]:
        listed = await self._bucket.list(prefix, start_after=start_after, limit=limit)
        return [info.key for info in listed]

    async def ping(self) -> None:
        await self._bucket.ping()
