"""The pieces of authentication on their own, with hand-written fakes: bearer header parsing,
API token cache and revocation, JWT verification (HS256 and RS256), the token bucket, the
guard's decisions (through the ASGI app, no server), the gateway's settings, and the service
side's caller policy."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError
from starlette.middleware import Middleware

from cadpipe.callers import (
    ADMIN_KEY,
    ANONYMOUS,
    IDENTITY_KEY,
    SERVICE_TOKEN_KEY,
    Caller,
    CallerPolicy,
    Unauthenticated,
)
from services.gateway.app import Gateway, create_app
from services.gateway.auth import (
    ApiTokens,
    Authenticator,
    AuthError,
    Identity,
    JwtVerifier,
    bearer_token,
)
from services.gateway.backends import BackendHealth
from services.gateway.guard import Guard
from services.gateway.ratelimit import RateLimiter, retry_after_header
from services.gateway.routes import default_modules, derive_routes_from_modules
from services.gateway.settings import Settings
from services.gateway.tokens import AuthUnavailable, StoredToken, new_token, token_hash


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTokens:
    """The api_tokens collection, counting lookups."""

    def __init__(self) -> None:
        self.by_hash: dict[str, StoredToken] = {}
        self.lookups = 0
        self.down = False

    def add(self, identity: str, *, admin: bool = False) -> tuple[str, StoredToken]:
        token = new_token()
        stored = StoredToken(f"id-{identity}", identity, admin, created_at=None)  # type: ignore[arg-type]
        self.by_hash[token_hash(token)] = stored
        return token, stored

    def revoke(self, token: str) -> None:
        stored = self.by_hash[token_hash(token)]
        self.by_hash[token_hash(token)] = StoredToken(
            stored.token_id, stored.identity, stored.admin, stored.created_at, revoked=True
        )

    async def find(self, sha256: str) -> StoredToken | None:
        self.lookups += 1
        if self.down:
            raise AuthUnavailable("MongoDB: ServerSelectionTimeoutError")
        return self.by_hash.get(sha256)


# --- bearer header ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ([], ""),
        (["Basic abc"], "invalid_request"),
        (["Bearer"], "invalid_request"),
        (["Bearer  "], "invalid_request"),
        (["Bearer a b"], "invalid_request"),
        (["Bearer a\x00b"], "invalid_request"),
        (["Bearer " + "a" * 9000], "invalid_request"),
        (["Bearer a", "Bearer b"], "invalid_request"),
    ],
)
def test_malformed_authorization_headers_are_refused(values: list[str], error: str) -> None:
    with pytest.raises(AuthError) as refused:
        bearer_token(values)
    assert refused.value.error == error


def test_the_scheme_is_case_insensitive() -> None:
    assert bearer_token(["bearer tok"]) == bearer_token(["BEARER tok"]) == "tok"


# --- API tokens --------------------------------------------------------------------------


async def test_a_verified_token_is_cached_until_its_time_is_up_then_revocation_shows() -> None:
    store, clock = FakeTokens(), Clock()
    token, _ = store.add("alice")
    tokens = ApiTokens(store, cache_seconds=10, clock=clock)
    assert (await tokens.authenticate(token)).name == "alice"
    store.revoke(token)
    assert (await tokens.authenticate(token)).name == "alice"  # cached: one lookup so far
    assert store.lookups == 1
    clock.now += 10.5
    with pytest.raises(AuthError, match="revoked"):
        await tokens.authenticate(token)


async def test_unknown_tokens_are_refused_and_a_store_outage_is_not_a_bad_token() -> None:
    store = FakeTokens()
    tokens = ApiTokens(store, cache_seconds=10)
    with pytest.raises(AuthError):
        await tokens.authenticate(new_token())
    store.down = True
    with pytest.raises(AuthUnavailable):
        await tokens.authenticate(new_token())


def test_tokens_are_random_and_stored_as_their_hash_only() -> None:
    first, second = new_token(), new_token()
    assert first != second and first.startswith("cpt_") and len(first) >= 40
    assert token_hash(first) != first and len(token_hash(first)) == 64


# --- JWT ---------------------------------------------------------------------------------

SECRET = "s" * 48


def _hs(claims: dict[str, Any], key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode({"exp": int(time.time()) + 60, **claims}, key, algorithm=alg)


def test_jwt_subject_admin_claim_audience_and_issuer() -> None:
    verifier = JwtVerifier(
        key=SECRET, algorithms=["HS256"], audience="cadpipe", issuer="https://id.example"
    )
    good = {"sub": "alice", "aud": "cadpipe", "iss": "https://id.example"}
    assert verifier.authenticate(_hs(good)) == Identity("alice", False, "jwt:alice")
    assert verifier.authenticate(_hs({**good, "cadpipe_admin": True})).admin
    assert verifier.authenticate(_hs({**good, "cadpipe_admin": ["x", "admin"]})).admin
    assert not verifier.authenticate(_hs({**good, "cadpipe_admin": "yes"})).admin
    for bad in ({**good, "aud": "other"}, {**good, "iss": "https://evil"}, {"sub": "alice"}):
        with pytest.raises(AuthError):
            verifier.authenticate(_hs(bad))
    with pytest.raises(AuthError, match="expired"):
        verifier.authenticate(_hs({**good, "exp": int(time.time()) - 3600}))


def test_rs256_tokens_verify_with_the_public_key_only() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    verifier = JwtVerifier(key=public.decode(), algorithms=["RS256"])
    token = jwt.encode({"sub": "bob", "exp": int(time.time()) + 60}, key, algorithm="RS256")
    assert verifier.authenticate(token).name == "bob"
    # the classic confusion: an HS256 token keyed with the public key is refused
    forged = jwt.encode({"sub": "bob", "exp": int(time.time()) + 60}, "x" * 64, algorithm="HS256")
    with pytest.raises(AuthError):
        verifier.authenticate(forged)


async def test_each_kind_of_token_goes_to_its_verifier() -> None:
    store = FakeTokens()
    token, _ = store.add("carol", admin=True)
    both = Authenticator(ApiTokens(store, cache_seconds=0), JwtVerifier(SECRET, ["HS256"]))
    assert (await both.authenticate(token)) == Identity("carol", True, "token:id-carol")
    assert (await both.authenticate(_hs({"sub": "dan"}))).name == "dan"
    jwt_only = Authenticator(None, JwtVerifier(SECRET, ["HS256"]))
    with pytest.raises(AuthError, match="not accepted"):
        await jwt_only.authenticate(token)
    with pytest.raises(AuthError, match="malformed"):
        await both.authenticate("hello")


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "api_tokens needs mongodb_uri"),
        ({"api_tokens": False}, "needs API tokens"),
        ({"api_tokens": False, "jwt_secret": SECRET, "jwt_algorithms": "HS256,RS256"}, "mix"),
        ({"api_tokens": False, "jwt_secret": SECRET, "jwt_algorithms": "none"}, "not 'none'"),
        ({"api_tokens": False, "jwt_secret": SECRET, "jwt_algorithms": "RS256"}, "public_key"),
        ({"api_tokens": False, "jwt_public_key": "pem", "jwt_algorithms": "HS256"}, "secret"),
        ({"auth_mode": "none", "service_token": "short"}, "at least 16"),
        ({"auth_mode": "none", "grpc_tls_cert_file": "c.pem"}, "go together"),
    ],
)
def test_inconsistent_settings_fail_at_start(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**values)


def test_authentication_is_on_unless_turned_off() -> None:
    assert Settings.model_fields["auth_mode"].default == "bearer"
    assert Settings(auth_mode="none").auth_mode == "none"


# --- rate limits ---------------------------------------------------------------------------


def test_a_bucket_grants_its_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_second=0.5, burst=3, clock=clock)
    assert [limiter.take("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("alice")
    assert wait == pytest.approx(2.0)
    assert retry_after_header(wait) == "2"
    assert limiter.take("bob") == 0.0  # buckets are per key
    clock.now += 2.0
    assert limiter.take("alice") == 0.0
    assert limiter.take("alice") > 0
    clock.now += 3600  # refills up to the burst, not beyond
    assert [limiter.take("alice") for _ in range(4)][-1] > 0


def test_the_bucket_table_is_bounded() -> None:
    limiter = RateLimiter(rate_per_second=1, burst=1, max_keys=100, clock=Clock())
    for n in range(1000):
        limiter.take(f"key-{n}")
    assert len(limiter._buckets) == 100


def test_retry_after_is_never_zero() -> None:
    assert retry_after_header(0.01) == "1" and retry_after_header(1.2) == "2"


# --- the guard, in front of the app (no server) ----------------------------------------------


class NoBackends:
    """The gateway's backends, recording calls (none are expected from refused requests)."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def unary(self, route: Any, request: Any, *, metadata: Any, deadline: float) -> Any:
        self.calls.append((route.full_method, dict(metadata)))
        return route.response_class()

    def server_stream(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no stream in these tests")

    async def check_all(self, deadline: float) -> list[BackendHealth]:
        return []


def _app(authenticator: Authenticator | None, **guard: Any) -> tuple[Any, NoBackends]:
    table = derive_routes_from_modules(default_modules())
    backends = NoBackends()
    gateway = Gateway(table=table, backends=backends, bearer_auth=True)
    middleware = Middleware(Guard, table=table, authenticator=authenticator, **guard)
    return create_app(gateway, middleware=[middleware]), backends


async def test_the_guard_forwards_the_identity_and_refuses_without_reaching_a_backend() -> None:
    store = FakeTokens()
    token, _ = store.add("alice")
    app, backends = _app(Authenticator(ApiTokens(store, cache_seconds=0), None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        refused = await http.get("/api/projects/p/scripts")
        assert refused.status_code == 401 and backends.calls == []
        encoded = await http.get("/%61pi/projects/p/scripts")  # the router decodes it
        assert encoded.status_code == 401 and backends.calls == []
        unknown = await http.get("/api/nothing/here")
        assert unknown.status_code == 401  # even a 404 needs a token: nothing to learn
        ok = await http.get("/api/projects/p/scripts", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
    [(_, metadata)] = backends.calls
    assert metadata[IDENTITY_KEY] == "alice" and metadata[ADMIN_KEY] == "false"


async def test_a_token_store_outage_is_503() -> None:
    store = FakeTokens()
    store.down = True
    app, backends = _app(Authenticator(ApiTokens(store, cache_seconds=0), None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        response = await http.get(
            "/api/projects/p/scripts", headers={"Authorization": f"Bearer {new_token()}"}
        )
    assert response.status_code == 503 and response.json()["code"] == 14
    assert backends.calls == []


async def test_uploads_are_limited_per_token_and_reads_are_not() -> None:
    store = FakeTokens()
    alice, _ = store.add("alice")
    bob, _ = store.add("bob")
    app, _ = _app(
        Authenticator(ApiTokens(store, cache_seconds=0), None),
        limiter=RateLimiter(rate_per_second=0.5, burst=2, clock=Clock()),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:

        async def post(token: str) -> httpx.Response:
            return await http.post(
                "/api/projects/p/upload-script",
                json={"script": "x = 1\n"},
                headers={"Authorization": f"Bearer {token}"},
            )

        assert [(await post(alice)).status_code for _ in range(2)] == [200, 200]
        limited = await post(alice)
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "2"
        assert limited.json()["code"] == 8 and "too many uploads" in limited.json()["message"]
        assert (await post(bob)).status_code == 200
        reads = [
            await http.get("/api/projects/p/scripts", headers={"Authorization": f"Bearer {alice}"})
            for _ in range(5)
        ]
        assert {r.status_code for r in reads} == {200}


async def test_with_authentication_off_requests_pass_unidentified_and_admin_paths_do_not() -> None:
    app, backends = _app(None, admin_prefixes=["/api/monitoring/"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        assert (await http.get("/api/projects/p/scripts")).status_code == 200
        assert (await http.get("/api/monitoring/s3/status")).status_code == 403
    [(_, metadata)] = backends.calls
    assert IDENTITY_KEY not in metadata


# --- the services' side ------------------------------------------------------------------


def test_the_caller_policy_believes_identities_only_from_trusted_peers() -> None:
    token = "t" * 32
    strict = CallerPolicy(service_token=token)
    trusted = [(SERVICE_TOKEN_KEY, token)]
    assert strict.identify([*trusted, (IDENTITY_KEY, "alice")]) == Caller("alice", False)
    assert strict.identify([*trusted, (IDENTITY_KEY, "r"), (ADMIN_KEY, "true")]).admin
    assert strict.identify(trusted, need_identity=False) == ANONYMOUS
    for metadata in (
        [(IDENTITY_KEY, "alice")],
        [(SERVICE_TOKEN_KEY, "u" * 32), (IDENTITY_KEY, "alice")],
        trusted,
        [*trusted, (IDENTITY_KEY, "a"), (IDENTITY_KEY, "b")],
        [*trusted, (IDENTITY_KEY, "")],
    ):
        with pytest.raises(Unauthenticated):
            strict.identify(metadata)
    mtls = CallerPolicy(mutual_tls=True)
    with pytest.raises(Unauthenticated):
        mtls.identify([])
    open_network = CallerPolicy()
    assert open_network.identify([]) == ANONYMOUS
    assert open_network.identify([(IDENTITY_KEY, "alice")]) == Caller("alice")


def test_who_may_see_a_project() -> None:
    alice, root = Caller("alice"), Caller("root", admin=True)
    assert alice.may_access("alice") and not alice.may_access("bob")
    assert not alice.may_access("") and not alice.may_access(None)  # ownerless, unknown
    assert root.may_access("bob") and ANONYMOUS.may_access("bob")

