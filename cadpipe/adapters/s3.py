"""A thin S3 adapter: the handful of bucket operations cadpipe needs, with S3's answers turned
into plain Python values. Works against AWS S3, MinIO and moto's server alike.

`Bucket` is blocking (boto3, but its puts go through obstore: s3_put.py says why);
`AsyncBucket` is the same bucket for async code, the one way services reach S3 from the event
loop: every call runs in a thread but the puts, which obstore awaits on the loop, and S3's
failures (botocore's errors) become cadpipe.errors.Unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cadpipe import errors
from cadpipe.adapters.s3_put import ObjectPuts
from cadpipe.settings import S3Settings

T = TypeVar("T")

_CONFLICT_STATUSES = (409, 412)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: dt.datetime
    etag: str = ""
    content_type: str = ""
    """Filled by head(), not by list() (S3 listings do not carry it)."""
    metadata: dict[str, str] = field(default_factory=dict)
    """User metadata (x-amz-meta-*, lower-case names); filled by head(), not by list()."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    body: bytes
    content_type: str
    metadata: dict[str, str]
    last_modified: dt.datetime


def make_client(settings: S3Settings, *, max_pool_connections: int = 32) -> Any:
    """A boto3 S3 client from settings; credentials fall back to boto3's usual chain."""
    kwargs: dict[str, Any] = {}
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        kwargs["aws_access_key_id"] = settings.aws_access_key_id.get_secret_value()
        kwargs["aws_secret_access_key"] = settings.aws_secret_access_key.get_secret_value()
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.aws_region,
        config=Config(
            max_pool_connections=max_pool_connections,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
            # SigV4 everywhere, presigned URLs included (botocore would presign with SigV2 in
            # us-east-1): the URL then states its lifetime (X-Amz-Expires, 7 days at most) and
            # its signature covers the exact object path
            signature_version="s3v4",
            connect_timeout=5,
            read_timeout=30,
        ),
        **kwargs,
    )


def open_bucket(
    settings: S3Settings,
    stack: ExitStack | AsyncExitStack,
    *,
    instrument: Callable[[Any], None] | None = None,
    max_pool_connections: int = 32,
) -> Bucket:
    """A service's bucket: its client closed with `stack`, and instrumented (e.g.
    cadpipe.metrics.ServiceMetrics.instrument_s3) when given."""
    client = make_client(settings, max_pool_connections=max_pool_connections)
    stack.callback(client.close)
    if instrument is not None:
        instrument(client)
    return Bucket(client, settings.s3_bucket)


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _held(error: ClientError) -> bool:
    """A conditional put refused because an object holds the key (412; 409 from some
    S3-compatible servers)."""
    return _status(error) in _CONFLICT_STATUSES


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    """S3's failures, as botocore raises them, raised as cadpipe.errors.Unavailable."""
    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise errors.Unavailable(f"S3: {error}") from error


class Bucket:
    """One bucket. Every method is blocking; async code uses AsyncBucket."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name
        self.puts = ObjectPuts(client, name)
        """The puts: through obstore, at a fraction of client.put_object's CPU (s3_put)."""

    def ping(self) -> None:
        """Raises when the bucket cannot be reached."""
        self.client.head_bucket(Bucket=self.name)

    def create_if_missing(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.name)
        except ClientError:
            self.client.create_bucket(Bucket=self.name)

    def put_if_absent(
        self, key: str, body: bytes, *, content_type: str, metadata: dict[str, str] | None = None
    ) -> bool:
        """Writes key only if no object holds it (If-None-Match: *). False when one already does."""
        try:
            self.puts(
                key, body, content_type=content_type, metadata=metadata or {}, if_none_match=True
            )
        except ClientError as error:
            if _held(error):
                return False
            raise
        return True

    def put(
        self, key: str, body: bytes, *, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        self.puts(key, body, content_type=content_type, metadata=metadata or {})

    def upload_file(self, key: str, path: str, *, content_type: str) -> None:
        self.client.upload_file(path, self.name, key, ExtraArgs={"ContentType": content_type})

    def get(self, key: str) -> StoredObject | None:
        try:
            reply = self.client.get_object(Bucket=self.name, Key=key)
        except ClientError as error:
            if _status(error) == 404:
                return None
            raise
        return StoredObject(
            key=key,
            body=reply["Body"].read(),
            content_type=reply.get("ContentType", ""),
            metadata=dict(reply.get("Metadata", {})),
            last_modified=reply["LastModified"],
        )

    def head(self, key: str) -> ObjectInfo | None:
        try:
            reply = self.client.head_object(Bucket=self.name, Key=key)
        except ClientError as error:
            if _status(error) == 404:
                return None
            raise
        return ObjectInfo(
            key,
            int(reply["ContentLength"]),
            reply["LastModified"],
            reply["ETag"],
            content_type=reply.get("ContentType", ""),
            metadata=dict(reply.get("Metadata", {})),
        )

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def list(
        self, prefix: str, *, start_after: str = "", limit: int | None = None
    ) -> Iterator[ObjectInfo]:
        """Objects under prefix in key order, after start_after, at most limit of them."""
        kwargs: dict[str, Any] = {"Bucket": self.name, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        if limit is not None:
            kwargs["PaginationConfig"] = {"MaxItems": limit}
        for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"], int(item["Size"]), item["LastModified"], item["ETag"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=key)

    def presign_get(self, key: str, expires_in: int, *, filename: str | None = None) -> str:
        params: dict[str, Any] = {"Bucket": self.name, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return str(
            self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in)
        )


class AsyncBucket:
    """A Bucket for async code: each call runs in a thread and S3 failures raise
    errors.Unavailable. `run` takes a blocking function of several bucket calls (one thread
    hop for all of them), with the same translation.

    threads 0: the event loop's default executor (min(32, cores + 4) threads, shared with every
    other blocking call of the process). A service with many S3 requests in flight gives the
    bucket threads of its own, as many as its client's connection pool
    (`max_pool_connections`): requests then neither wait for a thread while connections are
    free nor queue behind MongoDB calls; `close()` ends those threads."""

    def __init__(self, bucket: Bucket, *, threads: int = 0) -> None:
        self.blocking = bucket
        self.name = bucket.name
        self._executor = (
            ThreadPoolExecutor(threads, thread_name_prefix=f"s3-{bucket.name}") if threads else None
        )

    async def run(self, blocking: Callable[[], T]) -> T:
        with _unavailable():
            if self._executor is None:
                return await asyncio.to_thread(blocking)
            # as asyncio.to_thread does: the call sees the caller's context (log context)
            call = functools.partial(contextvars.copy_context().run, blocking)
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    async def ping(self) -> None:
        await self.run(self.blocking.ping)

    async def put_if_absent(
        self, key: str, body: bytes, *, content_type: str, metadata: dict[str, str] | None = None
    ) -> bool:
        """Bucket.put_if_absent, on the event loop: the puts need no thread (s3_put)."""
        with _unavailable():
            try:
                await self.blocking.puts.put_async(
                    key,
                    body,
                    content_type=content_type,
                    metadata=metadata or {},
                    if_none_match=True,
                )
            except ClientError as error:
                if _held(error):
                    return False
                raise
        return True

    async def put(
        self, key: str, body: bytes, *, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        with _unavailable():
            await self.blocking.puts.put_async(
                key, body, content_type=content_type, metadata=metadata or {}
            )

    async def upload_file(self, key: str, path: str, *, content_type: str) -> None:
        await self.run(lambda: self.blocking.upload_file(key, path, content_type=content_type))

    async def get(self, key: str) -> StoredObject | None:
        return await self.run(lambda: self.blocking.get(key))

    async def head(self, key: str) -> ObjectInfo | None:
        return await self.run(lambda: self.blocking.head(key))

    async def exists(self, key: str) -> bool:
        return await self.run(lambda: self.blocking.exists(key))

    async def list(
        self, prefix: str, *, start_after: str = "", limit: int | None = None
    ) -> list[ObjectInfo]:
        return await self.run(
            lambda: list(self.blocking.list(prefix, start_after=start_after, limit=limit))
        )

    async def delete(self, key: str) -> None:
        await self.run(lambda: self.blocking.delete(key))

    def presign_get(self, key: str, expires_in: int, *, filename: str | None = None) -> str:
        """Signed locally, no request: no thread needed."""
        return self.blocking.presign_get(key, expires_in, filename=filename)
