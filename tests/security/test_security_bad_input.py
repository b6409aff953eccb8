"""Hostile input on every route of the gateway's route table: bad path parameters, query strings,
bodies, headers, content types, methods, tokens, and another identity's project. Each case gets
the 4xx documented for it with a message saying what is wrong, none gets a 5xx, and S3 and
MongoDB hold exactly what they held before."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from google.protobuf.descriptor import FieldDescriptor
from routes import ROUTES, Example, example, is_admin, is_public, route_id
from security_stack import Secured, assert_unchanged, finish_version, upload
from support.polling import wait_until

from services.gateway.routes import Route
from services.gateway.tokens import new_token

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_BODY = 2 * 1024 * 1024  # the gateway's default MAX_BODY_BYTES


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    expected: frozenset[int]
    """The documented status(es): 400 bad input, 401 no valid token, 403 not an admin,
    404 no such thing (or not yours), 405 wrong method, 413 body too large, 415 content type."""
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    json: Any = None
    query: str = ""
    mentions: str = ""
    """A word the message must contain, when the case has an obvious one."""


BAD_PATH_VALUES: dict[str, list[tuple[str, str]]] = {
    # (raw path segment, word the message names)
    "project": [
        ("a%20b", "project"),
        ("%2E%2E", "project"),
        ("a%2Fb", "project"),
        ("x" * 65, "project"),
        ("%00", "project"),
        ("%C3%A9", "project"),
        ("%FF", "UTF-8"),
        ("", "project"),
    ],
    "version": [
        ("abc", "integer"),
        ("-1", "version"),
        ("1.5", "integer"),
        ("99999999999", "range"),
        ("0x10", "integer"),
    ],
    "format": [("exe", "format"), ("..%2Fstl", "format"), ("", "format")],
    "id": [("a%20b", "id"), ("x" * 65, "id"), ("%00", "id"), ("%FF", "UTF-8"), ("", "id")],
    "name": [
        ("..%2F..%2Fetc%2Fpasswd", "log"),
        ("other_v1_info_20260101_000000.log", "log"),
        ("x.log", "log"),
    ],
}

BAD_BODIES: list[tuple[str, bytes, str, int, str]] = [
    # (case, body, content type, status, message word)
    ("malformed JSON", b'{"script": ', "application/json", 400, "JSON"),
    ("a JSON array", b"[]", "application/json", 400, "object"),
    ("a JSON string", b'"x"', "application/json", 400, "object"),
    ("wrong field type", b'{"script": 5}', "application/json", 400, "script"),
    ("unknown field", b'{"nope": 1}', "application/json", 400, "nope"),
    ("nested too deeply", b'{"metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "application/json", 400, "body"),
    ("a huge integer", b'{"metadata": {"a": ' + b"9" * 5000 + b"}}", "application/json", 400,
     "body"),
    ("not UTF-8", b'{"script": "\xff"}', "application/json", 400, "UTF-8"),
    ("XML", b"<script/>", "application/xml", 415, "content type"),
    ("too large", b" " * (MAX_BODY + 1), "application/json", 413, "larger"),
]

UPLOAD_BODIES: list[tuple[str, bytes, str, int, str]] = [
    ("empty script", b'{"script": "  "}', "application/json", 400, "empty"),
    ("not Python", b'{"script": "def (:"}', "application/json", 400, "Python"),
    ("NUL byte", b'{"script": "x = 1\\u0000"}', "application/json", 400, "Python"),
    ("raw body not UTF-8", b"x = '\xff'\n", "text/x-python", 400, "UTF-8"),
    ("script over the limit", b'{"script": "#' + b"x" * (1024 * 1024 + 10) + b'"}',
     "application/json", 400, "bytes"),
    ("too many metadata entries",
     b'{"script": "x = 1", "metadata": {' + b",".join(
         b'"k%d": "v"' % n for n in range(40)) + b"}}",
     "application/json", 400, "metadata"),
    ("bad metadata key", b'{"script": "x = 1", "metadata": {"a.b": "v"}}', "application/json",
     400, "metadata"),
]


def _path(request: Example, field_name: str, raw_value: str) -> str:
    parts = []
    for segment in request.route.path.segments:
        if segment.literal is not None:
            parts.append(segment.literal)
        elif segment.field == field_name:
            parts.append(raw_value)
        else:
            parts.append(_segment_value(request, segment.field or ""))
    return "/" + "/".join(parts)


def _segment_value(request: Example, field_name: str) -> str:
    """The example's value of a path field (its path is already built)."""
    index = [s.field for s in request.route.path.segments].index(field_name)
    return request.path.split("/")[index + 1]


def cases_for(route: Route, project: str, token: str) -> list[Case]:
    request = example(route, project)
    auth = {"Authorization": f"Bearer {token}"}
    json_auth = {**auth, "Content-Type": "application/json"}
    cases: list[Case] = []

    def add(name: str, expected: int | set[int], **kwargs: Any) -> None:
        statuses = frozenset({expected} if isinstance(expected, int) else expected)
        kwargs.setdefault("method", request.method)
        kwargs.setdefault("path", request.path)
        kwargs.setdefault("headers", auth)
        if route.body and "content" not in kwargs and "json" not in kwargs:
            kwargs["json"] = request.json
        cases.append(Case(name=name, expected=statuses, **kwargs))

    # -- path parameters
    for field_name in route.path.fields:
        for raw, word in BAD_PATH_VALUES[field_name]:
            add(f"path {field_name}={raw[:20]!r}", 400, path=_path(request, field_name, raw),
                mentions=word)
    if "project" in route.path.fields:
        # a client resolves dot segments before sending: what arrives has no such route
        add("path with ..", 404, path=_path(request, "project", ".."), mentions="no route")
    # -- query strings
    add("unknown query parameter", 400, query="nope=1", mentions="nope")
    add("query not UTF-8", 400, query="x=%FF", mentions="UTF-8")
    add("too many query fields", 400, query="&".join(f"f{n}=1" for n in range(150)),
        mentions="query")
    for descriptor in route.query_fields():
        name = descriptor.name
        if descriptor.cpp_type in (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64):
            add(f"query {name} not a number", 400, query=f"{name}=abc", mentions=name)
            add(f"query {name} given twice", 400, query=f"{name}=1&{name}=2", mentions=name)
            add(f"query {name} out of range", 400, query=f"{name}=99999999999999999999",
                mentions=name)
    if any(d.name == "page_token" for d in route.query_fields()):
        add("forged page token", 400, query="page_token=eyJwIjoib3RoZXIiLCJhIjoxfQ",
            mentions="page_token")
    # -- bodies
    if route.body:
        bodies = list(BAD_BODIES)
        if route.full_method.endswith("UploadScript"):
            bodies += UPLOAD_BODIES
        for name, body, kind, status, word in bodies:
            add(f"body: {name}", status, content=body,
                headers={**auth, "Content-Type": kind}, json=None, mentions=word)
    # -- headers
    if route.full_method.endswith("UploadScript"):
        add("idempotency key with spaces", 400, headers={**json_auth, "Idempotency-Key": "a b"},
            mentions="idempotency")
        add("idempotency key too long", 400,
            headers={**json_auth, "Idempotency-Key": "k" * 200}, mentions="idempotency")
        add("metadata header with a bad key", 400, content=b"x = 1\n",
            headers={**auth, "Content-Type": "text/x-python", "X-Cadpipe-Meta-a.b": "v"},
            json=None, mentions="metadata")
    # -- methods
    for method in ("PUT", "PATCH", "DELETE", "POST", "GET"):
        if not any(r.http_method == method and r.path == route.path for r in ROUTES):
            add(f"method {method}", 405, method=method, json=None, mentions="not allowed")
            break
    # -- tokens
    add("no token", 401, headers={}, mentions="token")
    add("forged API token", 401, headers={"Authorization": f"Bearer {new_token()}"},
        mentions="token")
    add("not a bearer token", 401, headers={"Authorization": "Token abc"}, mentions="Bearer")
    return cases


async def _send(http: httpx.AsyncClient, case: Case) -> tuple[int, dict[str, Any], str]:
    url = case.path + (f"?{case.query}" if case.query else "")
    if case.json is not None:
        response = await http.request(case.method, url, json=case.json, headers=case.headers)
    else:
        response = await http.request(
            case.method, url, content=case.content, headers=case.headers
        )
    try:
        body = response.json()
    except ValueError:
        body = {}
    return response.status_code, body if isinstance(body, dict) else {}, response.text


async def _owned_project(secured: Secured, project: str) -> None:
    """Alice's project with a finished version: every route has something it could change."""
    async with secured.client("alice") as alice:
        assert (await upload(alice, project)).status_code == 200
        finish_version(secured.bucket, project)

        async def completed() -> bool:
            status = await alice.get(f"/api/projects/{project}/status")
            return status.json().get("state") == "completed"

        await wait_until(completed)


@pytest.mark.parametrize("route", [r for r in ROUTES if not is_public(r)], ids=route_id)
async def test_bad_input_gets_its_4xx_and_changes_nothing(
    secured: Secured, route: Route, project: str
) -> None:
    await _owned_project(secured, project)
    who = "root" if is_admin(route) else "alice"
    cases = cases_for(route, project, secured.tokens[who])
    before = await secured.settled_snapshot()
    wrong: list[str] = []
    async with secured.client() as http:
        for case in cases:
            status, body, text = await _send(http, case)
            message = str(body.get("message", ""))
            if status not in case.expected:
                expected = sorted(case.expected)
                wrong.append(f"{case.name}: {status} (expected {expected}) {text[:200]}")
            elif set(body) != {"code", "message", "details"} or not message:
                wrong.append(f"{case.name}: not the error body: {text[:200]}")
            elif case.mentions and case.mentions.lower() not in message.lower():
                wrong.append(
                    f"{case.name}: message {message[:200]!r} does not say {case.mentions!r}"
                )
    assert not wrong, f"{len(wrong)} of {len(cases)} cases:\n" + "\n".join(wrong)
    assert_unchanged(before, secured.snapshot())


@pytest.mark.parametrize(
    "route",
    [r for r in ROUTES if "project" in r.path.fields and not is_admin(r)],
    ids=route_id,
)
async def test_another_identitys_project_is_404_and_changes_nothing(
    secured: Secured, route: Route, project: str
) -> None:
    await _owned_project(secured, project)
    request = example(route, project)
    before = await secured.settled_snapshot()
    async with secured.client("bob") as bob:
        if route.server_streaming:
            async with bob.stream(request.method, request.path) as response:
                status = response.status_code
                body = (await response.aread()).decode()
        else:
            response = await bob.request(request.method, request.path, json=request.json)
            status, body = response.status_code, response.text
    assert status == 404, body
    assert f"project {project!r} not found" in body
    assert_unchanged(before, secured.snapshot())
