"""Bearer tokens → the identity a request is made for (docs/security.md).

Two kinds of token, told apart by their shape:
  * API tokens (`cpt_...`, tokens.py): random, shown once, looked up by their sha256 in MongoDB;
  * JWTs (three dot-separated parts): verified with JWT_SECRET or JWT_PUBLIC_KEY, `sub` is the
    identity, JWT_ADMIN_CLAIM makes an admin.

Every refusal is an AuthError with a message safe to show (it never repeats the token) and the
RFC 6750 error code for the WWW-Authenticate header.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from cadpipe.callers import Caller, InvalidIdentity, check_identity
from services.gateway.tokens import API_TOKEN_PREFIX, StoredToken, token_hash

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    name: str
    admin: bool = False
    rate_key: str = ""
    """What the rate limits count against: the API token's id, or the JWT's subject."""

    @property
    def caller(self) -> Caller:
        return Caller(self.name, self.admin)


class AuthError(Exception):
    """The request is not authenticated; `error` is RFC 6750's code (invalid_request: the
    header is malformed, invalid_token: the token is not good)."""

    def __init__(self, message: str, error: str = "invalid_token") -> None:
        super().__init__(message)
        self.message = message
        self.error = error


class TokenLookup(Protocol):
    async def find(self, sha256: str) -> StoredToken | None:
        """The token with this hash; AuthUnavailable when the store does not answer."""
        ...


def bearer_token(values: Sequence[str]) -> str:
    """The token of the request's Authorization header values."""
    if not values:
        raise AuthError("missing bearer token: send Authorization: Bearer <token>", "")
    if len(values) > 1:
        raise AuthError("more than one Authorization header", "invalid_request")
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError("Authorization must use the Bearer scheme", "invalid_request")
    token = token.strip()
    if not token or any(c.isspace() or not c.isprintable() for c in token) or len(token) > 8192:
        raise AuthError("malformed bearer token", "invalid_request")
    return token


class ApiTokens:
    """API tokens, cached for `cache_seconds` once verified (a revocation takes that long to
    reach every replica)."""

    def __init__(
        self,
        lookup: TokenLookup,
        *,
        cache_seconds: float,
        max_cached: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = cache_seconds
        self._max = max_cached
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, Identity]] = OrderedDict()

    async def authenticate(self, token: str) -> Identity:
        digest = token_hash(token)
        cached = self._cache.get(digest)
        now = self._clock()
        if cached is not None and cached[0] > now:
            return cached[1]
        stored = await self._lookup.find(digest)  # AuthUnavailable when the store is down
        if stored is None or stored.revoked:
            self._cache.pop(digest, None)
            raise AuthError("unknown or revoked API token")
        identity = Identity(stored.identity, stored.admin, rate_key=f"token:{stored.token_id}")
        if self._ttl > 0:
            self._cache[digest] = (now + self._ttl, identity)
            self._cache.move_to_end(digest)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return identity


@dataclass(frozen=True)
class JwtVerifier:
    key: str
    algorithms: Sequence[str]
    audience: str | None = None
    issuer: str | None = None
    admin_claim: str = "cadpipe_admin"
    admin_value: str = "admin"
    leeway_seconds: float = 30.0

    def authenticate(self, token: str) -> Identity:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the JWT has expired") from None
        except jwt.InvalidTokenError as error:
            # PyJWT's messages name the failed check (signature, audience, claim), not the key
            raise AuthError(f"invalid JWT: {error}") from None
        subject = claims["sub"]
        try:
            name = check_identity(subject) if isinstance(subject, str) else ""
        except InvalidIdentity:
            name = ""
        if not name:
            raise AuthError("the JWT's sub must be 1 to 128 printable ASCII characters")
        return Identity(name, self._is_admin(claims.get(self.admin_claim)), rate_key=f"jwt:{name}")

    def _is_admin(self, value: Any) -> bool:
        if value is True:
            return True
        if isinstance(value, str):
            return value == self.admin_value
        if isinstance(value, list):
            return self.admin_value in value
        return False


class Authenticator:
    """A bearer token → its identity, by the token's kind."""

    def __init__(self, api_tokens: ApiTokens | None, jwt_verifier: JwtVerifier | None) -> None:
        self._api_tokens = api_tokens
        self._jwt = jwt_verifier

    async def authenticate(self, token: str) -> Identity:
        if token.startswith(API_TOKEN_PREFIX):
            if self._api_tokens is None:
                raise AuthError("API tokens are not accepted here")
            return await self._api_tokens.authenticate(token)
        if token.count(".") == 2:
            if self._jwt is None:
                raise AuthError("JWTs are not accepted here")
            return self._jwt.authenticate(token)
        raise AuthError("malformed bearer token: neither an API token nor a JWT")
