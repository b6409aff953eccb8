"""PutObject without the boto3 client's call machinery, for the bucket's puts.

`client.put_object` validates its parameters against the service model, resolves the endpoint
through the rule set, emits some two dozen events and computes a CRC32 checksum it sends as an
aws-chunked trailer. For the one request cadpipe makes most (every upload is a conditional
put of a few kilobytes) that was a third of the script service's CPU per upload: `python -m
bench.s3_put` measures 1.8-2.1 ms of CPU per client.put_object against 0.7-1.0 ms for this,
and about 60 % of its time per put.

This builds the same request itself: path-style URL, the caller's headers, signed with
botocore's own SigV4 signer over the payload's SHA-256 (so S3 refuses a body changed on the
way: the integrity the checksum gave), and sends it through the client's own HTTP session
(its connection pool, proxies, CA bundle and timeouts). It retries as botocore's standard mode
does, follows a bucket to its region, and raises botocore's exceptions, so callers cannot tell
the difference; and it emits the client's after-call events, so cadpipe.metrics counts and
times it as any other S3 call.
"""

from __future__ import annotations

import random
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_RETRY_TRANSPORT = (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
_MAX_BACKOFF_SECONDS = 20.0  # botocore's standard mode: rand() * 2^(attempt - 1), at most 20 s


class DirectPut:
    """PutObject to `bucket` through boto3 `client`'s endpoint, credentials and connections."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        http: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._bucket = quote(bucket, safe="")
        self._endpoint = client.meta.endpoint_url.rstrip("/")
        self._region = client.meta.region_name
        self._events = client.meta.events
        self._attempts = max(1, int((client.meta.config.retries or {}).get("max_attempts", 3)))
        # botocore keeps these only behind its client's private names; bench.s3_put and the
        # adapter tests against moto's server would fail first if that changed
        self._credentials = client._get_credentials
        self._http = http or client._endpoint.http_session
        self._sleep = sleep
        self._jitter = jitter

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
        ClientError for S3's refusals (412 for a held key) and botocore's transport errors
        once the retries are spent."""
        headers = {"Content-Type": content_type}
        for name, value in metadata.items():
            if not (name.isascii() and value.isascii()):  # as botocore's client refuses it
                raise ParamValidationError(
                    report=f"Non ascii characters found in S3 metadata for key {name!r}"
                )
            headers[f"x-amz-meta-{name}"] = value
        if if_none_match:
            headers["If-None-Match"] = "*"
        path = f"{self._bucket}/{quote(key, safe='/~')}"
        context: dict[str, Any] = {"cadpipe_started": time.perf_counter()}
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._send(f"{self._endpoint}/{path}", headers, body)
            except BotoCoreError as error:
                if isinstance(error, _RETRY_TRANSPORT) and attempt < self._attempts:
                    self._back_off(attempt)
                    continue
                self._events.emit("after-call-error.s3.PutObject", exception=error, context=context)
                raise
            if response.status_code in _RETRY_STATUSES and attempt < self._attempts:
                self._back_off(attempt)
                continue
            if self._redirected(response) and attempt < self._attempts:
                continue
            self._events.emit(
                "after-call.s3.PutObject",
                http_response=response,
                parsed={},
                model=None,
                context=context,
            )
            if response.status_code >= 300:
                raise ClientError(_error_response(response), "PutObject")
            return

    def _send(self, url: str, headers: dict[str, str], body: bytes) -> AWSResponse:
        request = AWSRequest("PUT", url, data=body, headers=dict(headers))
        credentials = self._credentials()
        if credentials is not None:  # None: unsigned, as a client with UNSIGNED would send
            S3SigV4Auth(credentials.get_frozen_credentials(), "s3", self._region).add_auth(request)
        return self._http.send(request.prepare())

    def _redirected(self, response: AWSResponse) -> bool:
        """A bucket in another region than the client's: S3 names it (x-amz-bucket-region)
        on its refusal, and the next tries sign for it (and, on AWS's own endpoints, go to
        it), as botocore's client does."""
        region = response.headers.get("x-amz-bucket-region")
        if response.status_code not in (301, 400) or not region or region == self._region:
            return False
        self._region = region
        if (urlsplit(self._endpoint).hostname or "").endswith(".amazonaws.com"):
            self._endpoint = f"https://s3.{region}.amazonaws.com"
        return True

    def _back_off(self, attempt: int) -> None:
        self._sleep(min(_MAX_BACKOFF_SECONDS, self._jitter() * 2 ** (attempt - 1)))


def _error_response(response: AWSResponse) -> dict[str, Any]:
    """The error in the shape botocore's ClientError carries (Code, Message, HTTP status)."""
    code, message = str(response.status_code), ""
    try:
        root = ET.fromstring(response.content) if response.content else None
    except ET.ParseError:
        root = None
    if root is not None:
        code = root.findtext("Code") or code
        message = root.findtext("Message") or ""
    return {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {
            "HTTPStatusCode": response.status_code,
            "HTTPHeaders": dict(response.headers),
        },
    }
