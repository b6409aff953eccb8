"""PutObject through obstore (the Rust object_store crate), for the bucket's puts.

Every upload is a conditional put of a few kilobytes, and every job stores its outputs, its
marker and its started record with puts: it is the request cadpipe makes most. boto3's
`client.put_object` spends ~1.8 ms of CPU on one (parameter validation against the service
model, endpoint rules, two dozen events, a CRC32 trailer, then botocore's signer, urllib3 and
http.client), and async code adds the hop to a thread. obstore signs and sends it in Rust, on
its own runtime, awaited from the event loop without a thread. `python -m bench.s3_put`: 0.33
ms of CPU per put against boto3's 1.34 one at a time, 0.39 against 1.60 with 16 in flight.

Only the puts go this way; the bucket's other calls (reads, listings, presigned URLs,
multipart uploads) stay on boto3. The two clients cannot disagree about the bucket: the puts'
store is made from the boto3 client's own endpoint and credentials (its chain: environment,
profile, IRSA, instance roles; asked again every few minutes, so refreshed credentials are
used), and it signs for the region S3 names for the bucket (HeadBucket's x-amz-bucket-region),
so a wrong AWS_REGION does not break the puts alone. The payload's SHA-256 is signed (S3
refuses a body changed on the way); failures are retried with backoff as botocore's standard
mode does (3 tries); S3's refusals and transport failures are raised as botocore's exceptions
and reported through the client's after-call events, so callers and cadpipe.metrics see a put
as they see any other S3 call.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import obstore
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, ParamValidationError
from obstore.exceptions import AlreadyExistsError, PreconditionError
from obstore.store import S3Store

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Credential

CREDENTIALS_TTL = dt.timedelta(minutes=5)
"""How long the puts' store keeps credentials before asking boto3's chain again."""
_AWS_HOST = re.compile(r"(^|\.)amazonaws\.com(\.cn)?$")
_OBJECT_ATTRIBUTES = frozenset(
    {
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-type",
        "storage-class",
    }
)
"""The attributes obstore sends as headers of their own; any other name is user metadata."""
_HTTP_STATUS = re.compile(r"\b(?:status code|status):? (\d{3})\b", re.IGNORECASE)


class _Response(NamedTuple):
    """What the client's after-call event handlers read of a response."""

    status_code: int


class ObjectPuts:
    """PutObject to `bucket` with boto3 `client`'s endpoint and credentials."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self._bucket = bucket
        self._events = client.meta.events
        self._attempts = max(1, int((client.meta.config.retries or {}).get("max_attempts", 3)))
        self._store: S3Store | None = None
        self._making = threading.Lock()

    def __call__(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str],
        if_none_match: bool = False,
    ) -> None:
        """Stores body at key (only where no object holds it, with `if_none_match`). Raises
        ClientError for S3's refusals (412 for a held key) and a BotoCoreError for the rest,
        once the retries are spent."""
        arguments = _arguments(content_type, metadata, if_none_match)
        with self._reported():
            obstore.put(self._store_for_puts(), key, body, **arguments)

    async def put_async(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str],
        if_none_match: bool = False,
    ) -> None:
        """The same put, awaited on the event loop (no thread)."""
        arguments = _arguments(content_type, metadata, if_none_match)
        with self._reported():
            # the first put asks S3 for the bucket's region, a blocking call: in a thread
            store = self._store
            if store is None:
                store = await asyncio.to_thread(self._store_for_puts)
            await obstore.put_async(store, key, body, **arguments)

    @contextlib.contextmanager
    def _reported(self) -> Iterator[None]:
        """Times the put in the block, reports it through the client's after-call events, and
        raises its failure as botocore's exception."""
        started = time.perf_counter()
        try:
            yield
        except Exception as error:
            raise self._failed(error, started) from error
        self._done(200, started)

    def _store_for_puts(self) -> S3Store:
        """Made at the first put, once the bucket exists (its region is asked for)."""
        if self._store is None:
            with self._making:
                if self._store is None:
                    self._store = self._make_store()
        return self._store

    def _make_store(self) -> S3Store:
        options: ClientConfig = {
            "connect_timeout": dt.timedelta(seconds=self._client.meta.config.connect_timeout),
            "timeout": dt.timedelta(seconds=self._client.meta.config.read_timeout),
        }
        endpoint = self._client.meta.endpoint_url.rstrip("/")
        arguments: dict[str, Any] = {"region": self._bucket_region()}
        if not _AWS_HOST.search(urlsplit(endpoint).hostname or ""):
            arguments["endpoint"] = endpoint  # MinIO, moto: as configured; AWS: the region's
            options["allow_http"] = endpoint.startswith("http://")
        if bundle := os.environ.get("AWS_CA_BUNDLE"):  # trusted, as botocore trusts it
            options["root_certificate"] = Path(bundle).read_bytes()
        credentials = self._client._get_credentials()  # botocore keeps its chain private
        if credentials is None:  # an unsigned client (botocore.UNSIGNED)
            arguments["skip_signature"] = True
        else:
            arguments["credential_provider"] = _BotocoreCredentials(credentials)
        return S3Store(
            self._bucket,
            virtual_hosted_style_request=False,  # path-style, as the boto3 client
            client_options=options,
            retry_config={
                "max_retries": self._attempts - 1,
                "retry_timeout": dt.timedelta(seconds=60),
                "backoff": {
                    "init_backoff": dt.timedelta(milliseconds=100),
                    "max_backoff": dt.timedelta(seconds=20),
                    "base": 2,
                },
            },
            **arguments,
        )

    def _bucket_region(self) -> str:
        """The region S3 names for the bucket; the client's for a bucket not (yet) there or
        not ours to see. Raises when S3 cannot be reached: the next put asks again."""
        try:
            reply = self._client.head_bucket(Bucket=self._bucket)
        except ClientError:
            return str(self._client.meta.region_name)
        headers = reply.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        return str(headers.get("x-amz-bucket-region") or self._client.meta.region_name)

    def _done(self, status: int, started: float) -> None:
        self._events.emit(
            "after-call.s3.PutObject",
            http_response=_Response(status),
            parsed={},
            model=None,
            context={"cadpipe_started": started},
        )

    def _failed(self, error: Exception, started: float) -> Exception:
        """The botocore exception for obstore's `error`, reported as the client reports its
        own failures."""
        if isinstance(error, BotoCoreError | ClientError):  # HeadBucket's, reported already
            return error
        status = _status_of(error)
        if status is None:
            if isinstance(error, ValueError):  # a key object_store cannot express ("a//b")
                return ParamValidationError(report=str(error))
            failure = HTTPClientError(error=error)
            self._events.emit(
                "after-call-error.s3.PutObject",
                exception=failure,
                context={"cadpipe_started": started},
            )
            return failure
        self._done(status, started)
        message = str(error).split("\n", 1)[0]
        return ClientError(
            {
                "Error": {"Code": str(status), "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "PutObject",
        )


class _BotocoreCredentials:
    """obstore's credential provider over botocore's credentials (refreshed by botocore)."""

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials

    def __call__(self) -> S3Credential:
        frozen = self._credentials.get_frozen_credentials()
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": dt.datetime.now(dt.UTC) + CREDENTIALS_TTL,
        }


def _arguments(
    content_type: str, metadata: Mapping[str, str], if_none_match: bool
) -> dict[str, Any]:
    attributes = {"Content-Type": content_type}
    for name, value in metadata.items():
        if not (name.isascii() and value.isascii()):  # as botocore's client refuses it
            raise ParamValidationError(
                report=f"Non ascii characters found in S3 metadata for key {name!r}"
            )
        if name.lower() in _OBJECT_ATTRIBUTES:  # obstore would set the header, not metadata
            raise ParamValidationError(report=f"S3 metadata may not be named {name!r}")
        attributes[name] = value  # any other attribute is user metadata (x-amz-meta-*)
    return {
        "attributes": attributes,
        "mode": "create" if if_none_match else "overwrite",
        "use_multipart": False,  # bodies are small; large files go up through boto3
    }


def _status_of(error: Exception) -> int | None:
    """S3's HTTP status in obstore's error; None for a failure without an answer."""
    if isinstance(error, AlreadyExistsError | PreconditionError):
        return 412
    found = _HTTP_STATUS.search(str(error))
    return int(found.group(1)) if found else None
