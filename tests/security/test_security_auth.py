"""Authentication at the gateway: every /api route but the public ones needs a bearer token, an
API token or a JWT; anything else is 401 with `WWW-Authenticate: Bearer` and the JSON error
body, and reaches no backend."""

from __future__ import annotations

import argparse
import base64
import json
import time

import jwt
import pytest
from routes import ROUTES, admin_routes, example, is_public, protected_routes, route_id
from security_stack import JWT_SECRET, Secured, assert_unchanged, upload

from services.gateway.__main__ import tokens as tokens_command
from services.gateway.tokens import new_token

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _unsigned_jwt(claims: dict[str, object]) -> str:
    """alg "none": a token anyone can write."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def bad_credentials() -> dict[str, dict[str, str]]:
    now = int(time.time())
    return {
        "missing": {},
        "empty": {"Authorization": ""},
        "basic scheme": {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        "bearer without token": {"Authorization": "Bearer"},
        "token with a space": {"Authorization": "Bearer cpt_a b"},
        "neither kind": {"Authorization": "Bearer hello"},
        "forged API token": {"Authorization": f"Bearer {new_token()}"},
        "JWT signed with another key": {
            "Authorization": "Bearer "
            + jwt.encode({"sub": "alice", "exp": now + 60}, "another-key-" + "y" * 40)
        },
        "expired JWT": {
            "Authorization": "Bearer "
            + jwt.encode({"sub": "alice", "exp": now - 3600}, JWT_SECRET, algorithm="HS256")
        },
        "JWT without exp": {
            "Authorization": "Bearer " + jwt.encode({"sub": "alice"}, JWT_SECRET, algorithm="HS256")
        },
        "JWT alg none": {
            "Authorization": "Bearer " + _unsigned_jwt({"sub": "root", "exp": now + 60})
        },
        "JWT with a non-ASCII sub": {
            "Authorization": "Bearer "
            + jwt.encode({"sub": "ålice", "exp": now + 60}, JWT_SECRET, algorithm="HS256")
        },
        "garbage JWT": {"Authorization": "Bearer a.b.c"},
    }


@pytest.mark.parametrize("route", protected_routes(), ids=route_id)
async def test_every_protected_route_refuses_requests_without_a_valid_token(
    secured: Secured, route: object, project: str
) -> None:
    before = await secured.settled_snapshot()
    request = example(route, project)  # type: ignore[arg-type]
    async with secured.client() as http:
        for case, headers in bad_credentials().items():
            response = await http.request(
                request.method, request.path, json=request.json, headers=headers
            )
            assert response.status_code == 401, (case, response.text)
            assert response.headers["www-authenticate"].startswith('Bearer realm="cadpipe"'), case
            body = response.json()
            assert body["code"] == 16 and body["message"] and body["details"] == [], case
    assert_unchanged(before, secured.snapshot())


async def test_public_routes_and_the_documents_need_no_token(secured: Secured) -> None:
    async with secured.client() as http:
        for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
            response = await http.get(path)
            assert response.status_code == 200, (path, response.text)
        for route in ROUTES:
            if is_public(route):
                request = example(route, "p")
                response = await http.request(request.method, request.path, json=request.json)
                assert response.status_code == 200, (route_id(route), response.text)


async def test_the_openapi_document_declares_the_bearer_scheme(secured: Secured) -> None:
    async with secured.client() as http:
        document = (await http.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert document["security"] == [{"bearerAuth": []}]
    for route in ROUTES:
        operation = document["paths"][route.path.openapi_path][route.http_method.lower()]
        if is_public(route):
            assert operation["security"] == []
        else:
            assert "401" in operation["responses"], route_id(route)
    assert document["paths"]["/healthz"]["get"]["security"] == []


async def test_api_tokens_and_jwts_both_identify_the_caller(
    secured: Secured, project: str
) -> None:
    async with secured.client("alice") as http:
        assert (await upload(http, project)).status_code == 200
    as_jwt = {"Authorization": f"Bearer {secured.jwt('alice')}"}
    async with secured.client() as http:
        listed = await http.get(f"/api/projects/{project}/scripts", headers=as_jwt)
        assert listed.status_code == 200, listed.text
        assert [s["version"] for s in listed.json()["scripts"]] == [1]
        other = await http.get(
            f"/api/projects/{project}/scripts",
            headers={"Authorization": f"Bearer {secured.jwt('bob')}"},
        )
        assert other.status_code == 404


@pytest.mark.parametrize("route", admin_routes(), ids=route_id)
async def test_admin_routes_need_an_admin_identity(secured: Secured, route: object) -> None:
    request = example(route, "p")  # type: ignore[arg-type]
    async with secured.client() as http:
        for token in (
            secured.tokens["alice"],
            secured.jwt("alice"),
            secured.jwt("alice", cadpipe_admin=False),
        ):
            headers = {"Authorization": f"Bearer {token}"}
            refused = await http.request(
                request.method, request.path, json=request.json, headers=headers
            )
            assert refused.status_code == 403, refused.text
            assert refused.json()["code"] == 7
        for headers in (
            secured.auth("root"),
            {"Authorization": f"Bearer {secured.jwt('carol', cadpipe_admin=True)}"},
        ):
            allowed = await http.request(
                request.method, request.path, json=request.json, headers=headers
            )
            assert allowed.status_code not in (401, 403), allowed.text


async def test_a_revoked_token_is_refused(
    secured: Secured,
    project: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MONGODB_URI", secured.mongodb_uri)
    monkeypatch.setenv("MONGODB_DATABASE", secured.db.name)
    assert tokens_command(argparse.Namespace(action="create", identity="dave", admin=False)) == 0
    created = capsys.readouterr().out.splitlines()
    token, token_id = created[0], created[1].split()[3]
    assert token.startswith("cpt_")
    stored = secured.db["api_tokens"].find_one({"_id": token_id})
    assert stored["identity"] == "dave" and stored["sha256"] != token
    assert token not in json.dumps(stored, default=str)

    assert tokens_command(argparse.Namespace(action="list")) == 0
    listing = capsys.readouterr().out
    assert token_id in listing and token not in listing

    # revoked before its first use: no replica has it cached yet
    assert tokens_command(argparse.Namespace(action="revoke", token_id=token_id)) == 0
    capsys.readouterr()
    async with secured.client() as http:
        refused = await http.get(
            f"/api/projects/{project}/scripts", headers={"Authorization": f"Bearer {token}"}
        )
    assert refused.status_code == 401
    assert "revoked" in refused.json()["message"]
    assert tokens_command(argparse.Namespace(action="revoke", token_id="nope")) == 1


async def test_event_streams_take_the_token_as_a_query_parameter(
    secured: Secured, project: str
) -> None:
    async with secured.client("alice") as http:
        assert (await upload(http, project)).status_code == 200
    token = secured.tokens["alice"]
    async with secured.client() as http:
        async with http.stream(
            "GET", f"/api/projects/{project}/events", params={"access_token": token}
        ) as stream:
            assert stream.status_code == 200
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    assert json.loads(line.removeprefix("data:"))["project"] == project
                    break
        # only there: elsewhere a token in the URL (and so in access logs) is refused
        elsewhere = await http.get(
            f"/api/projects/{project}/scripts", params={"access_token": token}
        )
        assert elsewhere.status_code == 401
        assert "event streams only" in elsewhere.json()["message"]
        twice = await http.get(
            f"/api/projects/{project}/events",
            params={"access_token": token},
            headers=secured.auth("alice"),
        )
        assert twice.status_code == 401
