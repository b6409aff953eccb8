"""The bucket's puts (cadpipe.adapters.s3_put.DirectPut): what they store, through moto's real
server, and how they sign, retry and fail, through a recording HTTP session."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    ParamValidationError,
    SSLError,
)

from cadpipe.adapters import s3
from cadpipe.adapters.s3_put import DirectPut
from cadpipe.settings import S3Settings


def test_puts_store_body_content_type_and_metadata(bucket: s3.Bucket) -> None:
    key = "input/a b/ü+x~y_v1.py"  # quoted in the path, as S3 signs it
    assert bucket.put_if_absent(
        key, b"print(1)\n", content_type="text/x-python", metadata={"sha256": "abc", "o": "p"}
    )
    stored = bucket.get(key)
    assert stored is not None
    assert (stored.body, stored.content_type, stored.metadata) == (
        b"print(1)\n",
        "text/x-python",
        {"sha256": "abc", "o": "p"},
    )
    bucket.put("plain/key.json", b"{}", content_type="application/json")
    assert bucket.get("plain/key.json").body == b"{}"  # type: ignore[union-attr]


def test_a_held_key_is_refused_and_keeps_its_body(bucket: s3.Bucket) -> None:
    assert bucket.put_if_absent("k", b"first", content_type="text/plain")
    assert not bucket.put_if_absent("k", b"second", content_type="text/plain")
    assert bucket.get("k").body == b"first"  # type: ignore[union-attr]


def test_non_ascii_metadata_is_refused_before_anything_is_sent(bucket: s3.Bucket) -> None:
    with pytest.raises(ParamValidationError, match="Non ascii"):
        bucket.put_if_absent("k", b"x", content_type="text/plain", metadata={"owner": "jürgen"})
    assert bucket.get("k") is None


class Session:
    """An HTTP session that records the prepared requests and answers from a script."""

    def __init__(
        self, *answers: int | tuple[int, dict[str, str]] | Exception, body: bytes = b""
    ) -> None:
        self.answers = list(answers)
        self.body = body
        self.sent: list[AWSPreparedRequest] = []

    def send(self, request: AWSPreparedRequest) -> AWSResponse:
        self.sent.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        raw = _Raw(self.body if status >= 300 else b"")
        return AWSResponse(request.url, status, {"x-amz-request-id": "r", **headers}, raw)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, *_: Any, **__: Any) -> Any:
        yield self._body


@pytest.fixture
def client(s3_settings: S3Settings) -> Any:
    return s3.make_client(s3_settings)  # its endpoint, region, keys and retries; nothing sent


def direct(client: Any, session: Session, sleeps: list[float]) -> DirectPut:
    return DirectPut(client, "bkt", http=session, sleep=sleeps.append, jitter=lambda: 0.5)


def test_the_payload_and_the_condition_are_signed(client: Any) -> None:
    session = Session(200)
    put = direct(client, session, [])
    put(
        "in/p_v1.py", b"body", content_type="text/x-python", metadata={"m": "v"}, if_none_match=True
    )
    (request,) = session.sent
    assert request.method == "PUT"
    assert request.url == f"{client.meta.endpoint_url}/bkt/in/p_v1.py"
    assert request.body == b"body"
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert headers["x-amz-content-sha256"] == hashlib.sha256(b"body").hexdigest()
    assert headers["if-none-match"] == "*" and headers["x-amz-meta-m"] == "v"
    assert headers["content-length"] == "4"  # S3 refuses a PUT without it (no chunked bodies)
    authorization = headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=")
    assert f"/{client.meta.region_name}/s3/aws4_request" in authorization
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "if-none-match", "x-amz-content-sha256", "x-amz-meta-m"} <= set(signed)


def test_throttling_and_server_errors_are_retried_with_backoff(client: Any) -> None:
    session, sleeps = Session(503, 500, 200), []
    direct(client, session, sleeps)("k", b"x", content_type="text/plain", metadata={})
    assert len(session.sent) == 3 and sleeps == [0.5, 1.0]


def test_refusals_raise_client_errors_with_s3s_code_and_are_not_retried(client: Any) -> None:
    error = b"<Error><Code>PreconditionFailed</Code><Message>At least one</Message></Error>"
    session = Session(412, body=error)
    with pytest.raises(ClientError) as raised:
        direct(client, session, [])("k", b"x", content_type="t", metadata={}, if_none_match=True)
    assert raised.value.response["Error"]["Code"] == "PreconditionFailed"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert len(session.sent) == 1


def test_transport_errors_are_retried_then_raised_and_reported(client: Any) -> None:
    down = [EndpointConnectionError(endpoint_url="http://127.0.0.1:1") for _ in range(3)]
    session, sleeps, seen = Session(*down), [], []
    client.meta.events.register("after-call-error.s3", lambda **kw: seen.append(kw["event_name"]))
    with pytest.raises(EndpointConnectionError):
        direct(client, session, sleeps)("k", b"x", content_type="t", metadata={})
    assert len(session.sent) == 3 and sleeps == [0.5, 1.0]
    assert seen == ["after-call-error.s3.PutObject"]  # once per call, as the client does

    seen.clear()
    refused = Session(SSLError(endpoint_url="https://s3", error="bad certificate"))
    with pytest.raises(SSLError):  # not worth retrying, but still counted
        direct(client, refused, [])("k", b"x", content_type="t", metadata={})
    assert len(refused.sent) == 1 and seen == ["after-call-error.s3.PutObject"]


def scope(request: AWSPreparedRequest) -> str:
    return str(request.headers["Authorization"]).split("Credential=")[1].split(",")[0]


def test_a_bucket_in_another_region_is_followed_there(s3_settings: S3Settings) -> None:
    elsewhere = (301, {"x-amz-bucket-region": "eu-west-1"})
    on_aws = s3.make_client(S3Settings(**{**s3_settings.model_dump(), "s3_endpoint_url": None}))
    session = Session(elsewhere, 200)
    direct(on_aws, session, [])("k", b"x", content_type="t", metadata={})
    first, second = session.sent
    assert first.url == "https://s3.amazonaws.com/bkt/k" and "/us-east-1/s3/" in scope(first)
    assert second.url == "https://s3.eu-west-1.amazonaws.com/bkt/k"
    assert "/eu-west-1/s3/" in scope(second)

    # another endpoint (MinIO, moto) stays where it is; only the signature follows
    wrong_region = (400, {"x-amz-bucket-region": "eu-west-1"})
    session = Session(wrong_region, 200, 200)
    put = direct(s3.make_client(s3_settings), session, [])
    put("k", b"x", content_type="t", metadata={})
    put("k2", b"x", content_type="t", metadata={})  # and the next puts go there at once
    urls = [request.url.rsplit("/", 2)[0] for request in session.sent]
    assert urls == [s3_settings.s3_endpoint_url] * 3
    assert ["/eu-west-1/s3/" in scope(request) for request in session.sent] == [False, True, True]
