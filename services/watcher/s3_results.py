"""What the workers left in S3, read through cadpipe's Bucket on exact keys and prefixes.

One check of a pending version reads what its domain.Look asks for, on exact keys and the
version's own prefixes, however many projects or objects the bucket holds: a light look is one
GET (the started record started/{p}/{p}_v{N}.json while queued, else the marker); a full look
GETs the marker, the started record while queued, and, while there is no marker, LISTs the
version's log prefix logs/{p}/{p}_v{N}_. A marker that names no log adds that LIST, and an
older-contract (empty) marker a LIST of output/{p}/v{N}/, once, when it is found. The
watcher's one write is the queue expiry, a conditional PUT of the started record. Each read is
one blocking function run through AsyncBucket.run (a thread; S3 failures become
cadpipe.errors.Unavailable).
"""

from __future__ import annotations

from cadpipe import layout
from cadpipe import marker as markers
from cadpipe import started as started_records
from cadpipe.adapters.s3 import AsyncBucket
from cadpipe.marker import Marker, MarkerOutput
from cadpipe.started import StartedRecord
from services.watcher.domain import Found, LogObject, Look, log_object, output_from_listing


class S3Results:
    def __init__(self, bucket: AsyncBucket, *, presign_bucket: AsyncBucket | None = None) -> None:
        self._bucket = bucket.blocking
        self._call = bucket.run
        # Download URLs may need another endpoint than ours (what clients can reach).
        self._presign_bucket = presign_bucket or bucket

    async def ping(self) -> None:
        await self._call(self._bucket.ping)

    async def look(self, project: str, version: int, look: Look) -> Found:
        def blocking() -> Found:
            stored = self._bucket.get(layout.marker_key(project, version)) if look.marker else None
            if stored is None:
                record = self._started(project, version) if look.started else None
                logs = tuple(self._logs(project, version)) if look.logs else ()
                return Found(logs=logs, started=record, logs_read=look.logs)
            found = markers.parse(stored.body)
            outputs = self._outputs(project, version) if found.legacy else ()
            logs = tuple(self._logs(project, version)) if not found.log_key else ()
            return Found(
                marker=found,
                marker_written_at=stored.last_modified,
                outputs=outputs,
                logs=logs,
            )

        return await self._call(blocking)

    def _started(self, project: str, version: int) -> StartedRecord | None:
        stored = self._bucket.get(layout.started_key(project, version))
        if stored is None:
            return None
        return started_records.parse(stored.body, written_at=stored.last_modified)

    async def expire(self, project: str, version: int, record: StartedRecord) -> bool:
        return await self._call(
            lambda: self._bucket.put_if_absent(
                layout.started_key(project, version),
                record.to_json(),
                content_type=started_records.CONTENT_TYPE,
            )
        )

    def _logs(self, project: str, version: int | None) -> list[LogObject]:
        prefix = (
            layout.version_logs_prefix(project, version) if version else layout.logs_prefix(project)
        )
        found = (log_object(project, o.key, o.size) for o in self._bucket.list(prefix))
        return [g for g in found if g is not None and (not version or g.parsed.version == version)]

    def _outputs(self, project: str, version: int) -> tuple[MarkerOutput, ...]:
        listed = (
            output_from_listing(project, version, o.key, o.size)
            for o in self._bucket.list(layout.output_prefix(project, version))
        )
        return tuple(sorted((o for o in listed if o is not None), key=lambda o: o.name))

    async def read_text(self, key: str) -> str | None:
        def blocking() -> str | None:
            stored = self._bucket.get(key)
            return stored.body.decode("utf-8", errors="replace") if stored else None

        return await self._call(blocking)

    async def marker(self, project: str, version: int) -> Marker | None:
        def blocking() -> Marker | None:
            stored = self._bucket.get(layout.marker_key(project, version))
            return markers.parse(stored.body) if stored else None

        return await self._call(blocking)

    async def list_outputs(self, project: str, version: int) -> tuple[MarkerOutput, ...]:
        return await self._call(lambda: self._outputs(project, version))

    async def list_logs(self, project: str, version: int | None) -> list[LogObject]:
        return await self._call(lambda: self._logs(project, version))

    async def read_log(self, project: str, key: str) -> tuple[LogObject, bytes] | None:
        def blocking() -> tuple[LogObject, bytes] | None:
            stored = self._bucket.get(key)
            if stored is None:
                return None
            found = log_object(project, key, len(stored.body))
            return (found, stored.body) if found else None

        return await self._call(blocking)

    async def presign(self, key: str, *, expires_in: int, filename: str) -> str:
        return self._presign_bucket.presign_get(key, expires_in, filename=filename)
