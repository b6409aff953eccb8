"""The worker's bucket operations, over the shared AsyncBucket (boto3 in a thread, S3 failures
raised as cadpipe.errors.Unavailable)."""

from __future__ import annotations

import os

from cadpipe.adapters.s3 import AsyncBucket

SMALL_FILE_BYTES = 16 * 1024 * 1024
"""Files up to this size go up in one PutObject; larger ones through boto3's multipart upload."""


class S3JobStorage:
    def __init__(self, bucket: AsyncBucket) -> None:
        self._bucket = bucket

    async def get_bytes(self, key: str) -> bytes | None:
        stored = await self._bucket.get(key)
        return None if stored is None else stored.body

    async def exists(self, key: str) -> bool:
        return await self._bucket.exists(key)

    async def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        await self._bucket.put(key, body, content_type=content_type)

    async def put_if_absent(self, key: str, body: bytes, content_type: str) -> bool:
        return await self._bucket.put_if_absent(key, body, content_type=content_type)

    async def put_file(self, key: str, path: str, content_type: str) -> None:
        bucket = self._bucket.blocking

        def upload() -> None:
            # The job that wrote the file is dead by now; O_NOFOLLOW all the same.
            with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f:
                small = os.fstat(f.fileno()).st_size <= SMALL_FILE_BYTES
                if small:
                    bucket.put(key, f.read(), content_type=content_type)
            if not small:
                bucket.upload_file(key, path, content_type=content_type)

        await self._bucket.run(upload)

    async def list_keys(self, prefix: str) -> list[str]:
        return [o.key for o in await self._bucket.list(prefix)]

    async def delete(self, key: str) -> None:
        await self._bucket.delete(key)

    async def ping(self) -> None:
        await self._bucket.ping()
