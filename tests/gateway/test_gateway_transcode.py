"""HTTP request → gRPC request message, without any server."""

from __future__ import annotations

import math
import random
from typing import Any

import grpc
import pytest
from gateway_protos import Rpc, make_api
from google.protobuf.message import Message

from cadpipe.v1 import artifacts_pb2, scripts_pb2
from services.gateway.errors import GatewayError
from services.gateway.routes import (
    RouteTable,
    default_modules,
    derive_routes,
    derive_routes_from_modules,
)
from services.gateway.transcode import HttpInput, build_request, check_bindings, to_json

CADPIPE = derive_routes_from_modules(default_modules())


def request(
    table: RouteTable,
    method: str,
    path: str,
    *,
    query: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str = "application/json",
    headers: dict[str, bytes] | None = None,
    ignored: frozenset[str] = frozenset(),
) -> Any:
    match = table.lookup(method, path)
    http = HttpInput(
        path_params=match.path_params,
        query=query or [],
        body=body,
        content_type=content_type,
        headers=headers or {},
    )
    return build_request(match, http, ignored_query_params=ignored)


def refused(table: RouteTable, method: str, path: str, **kwargs: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        request(table, method, path, **kwargs)
    return caught.value


UPLOAD = "/api/projects/demo/upload-script"


def test_a_json_upload_fills_the_request_and_the_path_wins_over_the_body() -> None:
    message = request(
        CADPIPE,
        "POST",
        UPLOAD,
        body=b'{"project": "other", "script": "x = 1\\n", "metadata": {"by": "llm"}, '
        b'"idempotencyKey": "k"}',
    )
    assert message == scripts_pb2.UploadScriptRequest(
        project="demo", script="x = 1\n", metadata={"by": "llm"}, idempotency_key="k"
    )


def test_a_raw_python_upload_fills_script_bytes_and_metadata_from_headers() -> None:
    message = request(
        CADPIPE,
        "POST",
        UPLOAD,
        body=b"import Part\n\xff",  # not UTF-8: passed on as bytes, the backend decides
        content_type="text/x-python; charset=utf-8",
        headers={
            "x-cadpipe-meta-author": b"me",
            "x-cadpipe-meta-model": "größe".encode(),
            "x-cadpipe-meta-": b"ignored: no key",
            "idempotency-key": b"abc",
            "user-agent": b"curl",
        },
    )
    assert message == scripts_pb2.UploadScriptRequest(
        project="demo",
        script_bytes=b"import Part\n\xff",
        metadata={"author": "me", "model": "größe"},
        idempotency_key="abc",
    )
    plain = request(CADPIPE, "POST", UPLOAD, body=b"x = 1\n", content_type="text/plain")
    assert plain.WhichOneof("source") == "script_bytes"


def test_a_metadata_header_that_is_not_utf8_is_refused() -> None:
    error = refused(
        CADPIPE,
        "POST",
        UPLOAD,
        body=b"x=1",
        content_type="text/x-python",
        headers={"x-cadpipe-meta-a": b"\xff"},
    )
    assert error.http_status == 400
    assert "x-cadpipe-meta-a" in error.message


def test_the_idempotency_header_fills_the_field_and_must_agree_with_the_body() -> None:
    same = request(
        CADPIPE,
        "POST",
        UPLOAD,
        body=b'{"script": "x", "idempotency_key": "k"}',
        headers={"idempotency-key": b"k"},
    )
    assert same.idempotency_key == "k"
    error = refused(
        CADPIPE,
        "POST",
        UPLOAD,
        body=b'{"script": "x", "idempotency_key": "k"}',
        headers={"idempotency-key": b"j"},
    )
    assert error.http_status == 400
    assert "disagree" in error.message


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"{bad", "not valid JSON"),
        (b'{"script": "x"', "not valid JSON"),
        (b"\xff\xfe{}", "request body"),
        (b'["x"]', "must be a JSON object, got an array"),
        (b'"x"', "must be a JSON object, got a string"),
        (b"null", "must be a JSON object, got null"),
        (b"3", "must be a JSON object, got a number"),
        (b'{"scriptt": "x"}', 'no field named "scriptt"'),
        (b'{"script": 5}', "script"),
        (b'{"script": "x", "script_bytes": "eA=="}', "oneof"),
        (b'{"metadata": ["a"]}', "metadata"),
        (b'{"metadata": {"a": 1}}', "metadata"),
        (b'{"script_bytes": 5}', "script_bytes"),
        (b'{"script": "\\ud800"}', "request body"),
        (b"[" * 100_000 + b"]" * 100_000, "request body"),
        (b'{"script": ' + b"1" * 5000 + b"}", "digits"),
        (b'{"script": 1e999}', "script"),
    ],
)
def test_bad_json_bodies_are_invalid_argument_with_the_reason(body: bytes, complaint: str) -> None:
    error = refused(CADPIPE, "POST", UPLOAD, body=body)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.http_status == 400
    assert complaint in error.message


def test_json_content_types_are_read_as_json_and_others_refused_with_415() -> None:
    for kind in (
        "",
        "application/json; charset=utf-8",
        "application/merge-patch+json",
        "application/x-www-form-urlencoded",
    ):
        assert (
            request(CADPIPE, "POST", UPLOAD, body=b'{"script": "x"}', content_type=kind).script
            == "x"
        )
    error = refused(CADPIPE, "POST", UPLOAD, body=b"x", content_type="image/png")
    assert error.http_status == 415
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "text/x-python" in error.message  # says what would be accepted


def test_an_empty_body_is_an_empty_object() -> None:
    assert request(CADPIPE, "POST", UPLOAD, body=b"") == scripts_pb2.UploadScriptRequest(
        project="demo"
    )


def test_a_body_route_takes_no_query_parameters() -> None:
    error = refused(CADPIPE, "POST", UPLOAD, body=b"{}", query=[("project", "x")])
    assert error.http_status == 400
    assert "from the body" in error.message


def test_path_integers_parse_and_refuse_what_is_not_an_int32() -> None:
    message = request(CADPIPE, "GET", "/api/projects/p/script/3")
    assert message == scripts_pb2.GetScriptRequest(project="p", version=3)
    # the sign is the backend's to judge: it says why a negative version is wrong
    assert request(CADPIPE, "GET", "/api/projects/p/script/-1").version == -1
    for bad in ("abc", "3.0", "1e3", "0x10", "1_000", "%203", "", "%EF%BC%93"):  # last: fullwidth 3
        error = refused(CADPIPE, "GET", f"/api/projects/p/script/{bad}")
        assert error.http_status == 400, bad
        assert "path parameter 'version' must be an integer (int32)" in error.message
    error = refused(CADPIPE, "GET", "/api/projects/p/script/2147483648")
    assert "out of range for int32" in error.message


def test_path_strings_are_percent_decoded_utf8() -> None:
    assert request(CADPIPE, "GET", "/api/projects/..%2Fx/scripts").project == "../x"
    assert request(CADPIPE, "GET", "/api/projects/a%2Fb/scripts").project == "a/b"
    assert (
        request(CADPIPE, "GET", "/api/projects/%D0%B0bc/scripts").project == "\u0430bc"
    )  # Cyrillic a
    error = refused(CADPIPE, "GET", "/api/projects/%FF/scripts")
    assert error.http_status == 400
    assert "path parameter 'project' is not valid UTF-8" in error.message


def test_query_parameters_fill_the_remaining_fields_by_proto_or_json_name() -> None:
    message = request(
        CADPIPE, "GET", "/api/projects/p/scripts", query=[("page_size", "2"), ("pageToken", "t")]
    )
    assert message == scripts_pb2.ListScriptsRequest(project="p", page_size=2, page_token="t")
    download = request(CADPIPE, "GET", "/api/projects/p/download/stl", query=[("version", "4")])
    assert download == artifacts_pb2.GetDownloadUrlRequest(project="p", format="stl", version=4)


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ([("page_size", "x")], "query parameter 'page_size' must be an integer"),
        ([("page_size", "")], "query parameter 'page_size' must be an integer"),
        ([("page_size", "1"), ("page_size", "2")], "given more than once"),
        ([("pageSize", "1"), ("page_size", "2")], "given more than once"),
        ([("project", "other")], "unknown query parameter 'project'"),
        ([("versio", "1")], "accepted: page_size, page_token"),
    ],
)
def test_bad_query_parameters_are_refused(query: list[tuple[str, str]], complaint: str) -> None:
    error = refused(CADPIPE, "GET", "/api/projects/p/scripts", query=query)
    assert error.http_status == 400
    assert complaint in error.message


def test_ignored_query_parameters_are_left_to_middleware() -> None:
    message = request(
        CADPIPE,
        "GET",
        "/api/projects/p/scripts",
        query=[("access_token", "t")],
        ignored=frozenset({"access_token"}),
    )
    assert message == scripts_pb2.ListScriptsRequest(project="p")


SCALARS = derive_routes(
    [make_api([Rpc("Get", {"get": "/v/{id}"}), Rpc("Put", {"put": "/v/{id}", "body": "inner"})])]
)


def scalar(name: str, value: str) -> Message:
    return request(SCALARS, "GET", "/v/x", query=[(name, value)])


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("big", "-9223372036854775808", -(2**63)),
        ("u", "18446744073709551615", 2**64 - 1),
        ("flag", "true", True),
        ("flag", "False", False),
        ("flag", "1", True),
        ("ratio", "1.5", 1.5),
        ("ratio", "-1e3", -1000.0),
        ("ratio", ".5", 0.5),
        ("ratio", "Infinity", math.inf),
        ("small", "3.25", 3.25),
        ("kind", "KIND_A", 1),
        ("kind", "1", 1),
        ("blob", "aGk=", b"hi"),
        ("blob", "aGk", b"hi"),
        ("blob", "-_8", b"\xfb\xff"),
    ],
)
def test_query_values_convert_to_the_field_type(name: str, value: str, expected: object) -> None:
    assert getattr(scalar(name, value), name) == expected


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("u", "-1", "out of range for uint64"),
        ("big", "9223372036854775808", "out of range for int64"),
        ("flag", "yes", "must be true or false"),
        ("ratio", "1,5", "must be a number"),
        ("ratio", "nan", "must be a number"),
        ("ratio", "1e999", "out of range"),
        ("small", "1e39", "out of range"),
        ("kind", "KIND_B", "must be one of KIND_UNSPECIFIED, KIND_A"),
        ("kind", "7", "must be one of"),
        ("blob", "a$b", "must be base64"),
        ("inner", "x", "unknown query parameter 'inner'"),  # messages cannot come from a query
        ("labels", "x", "unknown query parameter 'labels'"),
    ],
)
def test_query_values_that_do_not_fit_the_field_are_refused(
    name: str, value: str, complaint: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        scalar(name, value)
    assert caught.value.http_status == 400
    assert complaint in caught.value.message


def test_repeated_query_parameters_append() -> None:
    assert list(request(SCALARS, "GET", "/v/x", query=[("tags", "a"), ("tags", "b")]).tags) == [
        "a",
        "b",
    ]


def test_a_body_bound_to_one_field_fills_that_field_and_the_query_the_rest() -> None:
    message = request(SCALARS, "PUT", "/v/x", body=b'{"x": "in"}', query=[("n", "5")])
    assert message.inner.x == "in"
    assert message.n == 5
    assert message.id == "x"


def test_raw_body_bindings_name_fields_that_exist() -> None:
    check_bindings(list(CADPIPE))  # does not raise for the cadpipe API


def test_responses_are_proto3_json_with_proto_names_and_defaults() -> None:
    response = scripts_pb2.UploadScriptResponse(
        script=scripts_pb2.ScriptVersion(project="p", version=1, size_bytes=2**40)
    )
    response.script.uploaded_at.FromSeconds(0)
    assert to_json(response) == {
        "script": {
            "project": "p",
            "version": 1,
            "key": "",
            "sha256": "",
            "size_bytes": str(2**40),
            "uploaded_at": "1970-01-01T00:00:00Z",
            "content_type": "",
            "metadata": {},
        },
        "replayed": False,
    }


def test_arbitrary_input_is_a_4xx_or_a_request_never_anything_else() -> None:
    """A seeded fuzz over paths, queries, content types and bodies: every outcome is a request
    message or a GatewayError with a 4xx status (a crash here would be a 500 in production)."""
    rng = random.Random(20260101)
    fragments = [
        b"{",
        b"}",
        b"[",
        b"]",
        b'"script"',
        b":",
        b",",
        b'"x"',
        b"1e999",
        b"null",
        b"\\u0000",
        b'"\\ud800"',
        b"\xff",
        b"true",
        b'"metadata"',
        b'{"a":1}',
        b"-1",
        b"9" * 30,
        b" ",
    ]
    segments = [
        "p",
        "",
        "..%2Fx",
        "%FF",
        "%00",
        "1",
        "-1",
        "abc",
        "2147483648",
        "%E2%80%8B",
        "a%2Fb",
    ]
    paths = [
        "/api/projects/{}/upload-script",
        "/api/projects/{}/scripts",
        "/api/projects/{}/script/{}",
        "/api/projects/{}/download/{}",
        "/api/projects/{}/logs/{}",
    ]
    query_names = ["version", "page_size", "page_token", "pageSize", "x", ""]
    query_values = ["1", "", "-3", "abc", "1.5", "\x00", "99999999999"]
    content_types = [
        "application/json",
        "text/x-python",
        "text/plain",
        "",
        "image/png",
        "application/ld+json",
    ]
    outcomes = {"request": 0, "refused": 0}
    for _ in range(3000):
        template = rng.choice(paths)
        path = template.format(*(rng.choice(segments) for _ in range(template.count("{}"))))
        method = "POST" if "upload" in path else "GET"
        try:
            request(
                CADPIPE,
                method,
                path,
                query=[
                    (rng.choice(query_names), rng.choice(query_values))
                    for _ in range(rng.randint(0, 2))
                ],
                body=b"".join(rng.choice(fragments) for _ in range(rng.randint(0, 8))),
                content_type=rng.choice(content_types),
                headers={"idempotency-key": rng.choice([b"k", b"\xff", b""])},
            )
            outcomes["request"] += 1
        except GatewayError as error:
            assert 400 <= error.http_status < 500, (path, error)
            outcomes["refused"] += 1
    assert outcomes["request"] > 100 and outcomes["refused"] > 100, outcomes
