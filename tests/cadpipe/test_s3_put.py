"""The bucket's puts (cadpipe.adapters.s3_put.ObjectPuts, through obstore): what they store,
through moto's real server, and how they sign, retry and fail, through a scripted S3 server
that records what it is sent."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    HTTPClientError,
    ParamValidationError,
)
from botocore.stub import Stubber

from cadpipe import errors
from cadpipe.adapters import s3
from cadpipe.devstack import free_port
from cadpipe.settings import S3Settings


def test_puts_store_body_content_type_and_metadata(bucket: s3.Bucket) -> None:
    key = "input/a b/ü+x~y#z%_v1.py"  # stored as it is named, not as the URL quotes it
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
    bucket.put("plain/key.json", b"[]", content_type="application/json")  # overwrites
    assert bucket.get("plain/key.json").body == b"[]"  # type: ignore[union-attr]


def test_a_held_key_is_refused_and_keeps_its_body(bucket: s3.Bucket) -> None:
    assert bucket.put_if_absent("k", b"first", content_type="text/plain")
    assert not bucket.put_if_absent("k", b"second", content_type="text/plain")
    assert bucket.get("k").body == b"first"  # type: ignore[union-attr]


async def test_the_async_puts_need_no_thread_and_answer_alike(bucket: s3.Bucket) -> None:
    async_bucket = s3.AsyncBucket(bucket)
    puts = [async_bucket.put_if_absent("same", b"%d" % n, content_type="t") for n in range(8)]
    assert sorted(await asyncio.gather(*puts)) == [False] * 7 + [True]  # one of 8 holds it
    await async_bucket.put("other", b"x", content_type="text/plain", metadata={"m": "v"})
    stored = bucket.get("other")
    assert stored is not None and stored.metadata == {"m": "v"}


def test_non_ascii_metadata_is_refused_before_anything_is_sent(bucket: s3.Bucket) -> None:
    with pytest.raises(ParamValidationError, match="Non ascii"):
        bucket.put_if_absent("k", b"x", content_type="text/plain", metadata={"owner": "jürgen"})
    assert bucket.get("k") is None


@pytest.mark.parametrize("name", ["Content-Type", "cache-control", "Storage-Class"])
def test_metadata_named_as_an_object_attribute_is_refused(bucket: s3.Bucket, name: str) -> None:
    with pytest.raises(ParamValidationError, match="may not be named"):
        bucket.put("k", b"x", content_type="text/plain", metadata={name: "v"})
    assert bucket.get("k") is None


def test_puts_are_counted_and_timed_as_the_clients_own_calls(bucket: s3.Bucket) -> None:
    seen: list[tuple[str, int]] = []

    def after_call(event_name: str, http_response: Any, context: dict[str, Any], **_: Any) -> None:
        assert context["cadpipe_started"] > 0  # cadpipe.metrics times the call from it
        seen.append((event_name, http_response.status_code))

    bucket.client.meta.events.register("after-call.s3.PutObject", after_call)
    bucket.put_if_absent("k", b"x", content_type="t")
    bucket.put_if_absent("k", b"x", content_type="t")
    assert seen == [("after-call.s3.PutObject", 200), ("after-call.s3.PutObject", 412)]


@dataclass
class Sent:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


DROP = 0
"""A scripted answer: the connection is closed without one."""


@dataclass
class ScriptedS3:
    """An S3 endpoint on 127.0.0.1 that records every request and answers puts from a
    script of statuses (200 once it runs out); HeadBucket names `region`."""

    port: int
    region: str = "us-east-1"
    answers: list[int] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)

    @property
    def puts(self) -> list[Sent]:
        return [r for r in self.sent if r.method == "PUT"]

    def settings(self) -> S3Settings:
        return S3Settings(
            s3_bucket="bkt",
            s3_endpoint_url=f"http://127.0.0.1:{self.port}",
            aws_access_key_id="AKIDEXAMPLE",  # type: ignore[arg-type]
            aws_secret_access_key="secret",  # type: ignore[arg-type]
        )

    @classmethod
    @contextlib.contextmanager
    def serving(cls, port: int) -> Iterator[ScriptedS3]:
        state = cls(port)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._record(b"")
                self.send_response(200)
                self.send_header("x-amz-bucket-region", state.region)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_PUT(self) -> None:
                self._record(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                status = state.answers.pop(0) if state.answers else 200
                if status == DROP:
                    self.close_connection = True
                    return
                body = b"" if status < 300 else b"<Error><Code>Refused</Code></Error>"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status < 300:
                    self.send_header("ETag", '"e"')
                self.end_headers()
                self.wfile.write(body)

            def _record(self, body: bytes) -> None:
                headers = {name.lower(): value for name, value in self.headers.items()}
                state.sent.append(Sent(self.command, self.path, headers, body))

        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        try:
            yield state
        finally:
            server.shutdown()
            server.server_close()


@pytest.fixture
def scripted() -> Iterator[ScriptedS3]:
    with ScriptedS3.serving(free_port()) as server:
        yield server


def scripted_bucket(scripted: ScriptedS3) -> s3.Bucket:
    return s3.Bucket(s3.make_client(scripted.settings()), "bkt")


def test_the_payload_and_the_condition_are_signed(scripted: ScriptedS3) -> None:
    bucket = scripted_bucket(scripted)
    assert bucket.put_if_absent("in/p_v1.py", b"body", content_type="t", metadata={"m": "v"})
    (put,) = scripted.puts
    assert (put.path, put.body) == ("/bkt/in/p_v1.py", b"body")
    assert put.headers["x-amz-content-sha256"] == hashlib.sha256(b"body").hexdigest()
    assert put.headers["if-none-match"] == "*" and put.headers["x-amz-meta-m"] == "v"
    assert put.headers["content-type"] == "t" and put.headers["content-length"] == "4"
    authorization = put.headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/s3/aws4_request" in authorization
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "if-none-match", "x-amz-content-sha256", "x-amz-meta-m"} <= set(signed)


def test_a_put_signs_for_the_region_s3_names_for_the_bucket(scripted: ScriptedS3) -> None:
    scripted.region = "eu-west-1"  # AWS_REGION says us-east-1
    bucket = scripted_bucket(scripted)
    bucket.put("k", b"x", content_type="t")
    bucket.put("k2", b"x", content_type="t")
    assert [r.method for r in scripted.sent] == ["HEAD", "PUT", "PUT"]  # asked once
    assert all("/eu-west-1/s3/" in r.headers["authorization"] for r in scripted.puts)


def test_on_aws_the_puts_go_to_the_buckets_own_region(s3_settings: S3Settings) -> None:
    on_aws = s3.make_client(S3Settings(**{**s3_settings.model_dump(), "s3_endpoint_url": None}))
    with Stubber(on_aws) as stub:
        headers = {"x-amz-bucket-region": "eu-west-1"}
        stub.add_response("head_bucket", {"ResponseMetadata": {"HTTPHeaders": headers}})
        store = s3.Bucket(on_aws, "bkt").puts._store_for_puts()
    assert store.config.get("region") == "eu-west-1"
    assert "endpoint" not in store.config  # obstore's own: https://s3.eu-west-1.amazonaws.com


def test_server_errors_are_retried(scripted: ScriptedS3) -> None:
    scripted.answers = [503, 500]
    scripted_bucket(scripted).put("k", b"x", content_type="t")
    assert len(scripted.puts) == 3  # botocore's standard mode: 3 tries


def test_refusals_raise_client_errors_with_the_status_and_are_not_retried(
    scripted: ScriptedS3,
) -> None:
    scripted.answers = [403]
    bucket = scripted_bucket(scripted)
    with pytest.raises(ClientError) as raised:
        bucket.put("k", b"x", content_type="t")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert len(scripted.puts) == 1

    scripted.answers = [403]
    with pytest.raises(errors.Unavailable, match="S3"):  # async code's one error for S3
        asyncio.run(s3.AsyncBucket(bucket).put_if_absent("k", b"x", content_type="t"))


def test_a_put_without_an_answer_is_retried_then_raised_and_reported(
    scripted: ScriptedS3,
) -> None:
    scripted.answers = [DROP, DROP, DROP]
    bucket = scripted_bucket(scripted)
    seen: list[str] = []
    bucket.client.meta.events.register(
        "after-call-error.s3", lambda **kw: seen.append(kw["event_name"])
    )
    with pytest.raises(HTTPClientError, match="after 2 retries"):
        bucket.put("k", b"x", content_type="t")
    assert len(scripted.puts) == 3 and seen == ["after-call-error.s3.PutObject"]  # once


def test_with_s3_unreachable_a_put_fails_and_the_next_asks_the_region_again() -> None:
    port = free_port()
    nobody = ScriptedS3(port).settings()
    bucket = s3.Bucket(s3.make_client(nobody), "bkt")
    with pytest.raises(EndpointConnectionError):
        bucket.put("k", b"x", content_type="t")
    with ScriptedS3.serving(port) as scripted:
        bucket.put("k", b"x", content_type="t")
    assert [r.method for r in scripted.sent] == ["HEAD", "PUT"]
