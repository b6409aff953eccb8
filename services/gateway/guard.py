"""The gateway's door (docs/security.md): an ASGI middleware, inside the request-id one, that

  1. lets the gateway's own routes (/healthz, /readyz, /docs, /openapi.json), the web app's
     static files (GETs outside /api that no route of the protos serves) and the configured
     public /api paths through;
  2. authenticates everything else with its bearer token: 401 with `WWW-Authenticate: Bearer`
     and the JSON error body when it is missing, malformed, forged, expired or revoked
     (event streams may send `?access_token=`, as EventSource cannot send headers);
  3. refuses admin paths to non-admin identities (403);
  4. takes one token from the caller's bucket on routes that write (429 with Retry-After);
  5. forwards the identity to the backends: scope state `grpc_metadata` (cadpipe.callers).

Whatever path it is not sure about needs a token: the allow-list is exact, and paths are compared
the way the router reads them (percent-decoded per segment), so an encoded spelling of a public
path cannot reach a protected route.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl

import grpc
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.app import FORWARD_METADATA
from services.gateway.auth import (
    Authenticator,
    AuthError,
    Identity,
    bearer_token,
)
from services.gateway.errors import GatewayError
from services.gateway.ratelimit import MethodLimit, RateLimiter, retry_after_header
from services.gateway.routes import Route, RouteTable, route_of, split_raw_path
from services.gateway.tokens import AuthUnavailable
from services.gateway.webapp import is_api_path

logger = logging.getLogger(__name__)

GATEWAY_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/openapi.json"})
IDENTITY_STATE = "identity"
ACCESS_TOKEN_PARAM = "access_token"
REALM = "cadpipe"


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        table: RouteTable,
        authenticator: Authenticator | None,
        limiter: RateLimiter | None = None,
        method_limiters: Mapping[str, MethodLimit] | None = None,
        public_paths: Sequence[str] = (),
        admin_prefixes: Sequence[str] = (),
    ) -> None:
        """authenticator None: AUTH_MODE=none, every request passes unidentified and
        unlimited."""
        self.app = app
        self._table = table
        self._authenticator = authenticator
        self._limiter = limiter
        self._method_limiters = dict(method_limiters or {})
        self._public = {tuple(split_raw_path(p)) for p in public_paths}
        self._admin_prefixes = tuple(admin_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in GATEWAY_PATHS:
            await self.app(scope, receive, send)
            return
        routed = route_of(self._table, scope)
        segments = split_raw_path(routed.raw_path)
        if tuple(segments) in self._public:
            await self.app(scope, receive, send)
            return
        route = routed.match.route if routed.match is not None else None
        if route is None and scope["method"] in ("GET", "HEAD") and not is_api_path(scope["path"]):
            # the web app's static files (services.gateway.webapp): no data, no token
            await self.app(scope, receive, send)
            return
        # any other unknown route: the app answers 404/405 once the caller is known
        try:
            identity = await self._identify(scope, route)
            self._check_admin(scope["path"], segments, identity)
            self._limit(route, identity)
        except GatewayError as error:
            logger.info(
                "%s %s refused: %s",
                scope["method"],
                scope["path"],
                error.message,
                extra={"request_id": scope.get("state", {}).get("request_id")},
            )
            response = JSONResponse(
                error.body(), status_code=error.http_status, headers=error.headers or None
            )
            await response(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state[IDENTITY_STATE] = identity
        if identity is not None:
            state.setdefault(FORWARD_METADATA, []).extend(identity.caller.metadata())
        await self.app(scope, receive, send)

    async def _identify(self, scope: Scope, route: Route | None) -> Identity | None:
        if self._authenticator is None:
            return None
        query_token = _query_token(scope)
        headers = [v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"]
        if query_token is not None:
            if route is None or not route.server_streaming:
                raise _unauthenticated(
                    AuthError(
                        f"{ACCESS_TOKEN_PARAM} is accepted on event streams only; send the "
                        "Authorization header",
                        "invalid_request",
                    )
                )
            if headers:
                raise _unauthenticated(
                    AuthError(
                        f"send the token once: Authorization header or {ACCESS_TOKEN_PARAM}",
                        "invalid_request",
                    )
                )
            headers = [f"Bearer {query_token}"]
        try:
            return await self._authenticator.authenticate(bearer_token(headers))
        except AuthError as error:
            raise _unauthenticated(error) from None
        except AuthUnavailable as error:
            logger.warning("bearer token not checked: %s", error)
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE, "the bearer token cannot be checked now; retry later"
            ) from None

    def _check_admin(self, path: str, segments: list[bytes], identity: Identity | None) -> None:
        if not self._admin_prefixes or (identity is not None and identity.admin):
            return
        decoded = "/" + "/".join(s.decode("utf-8", errors="replace") for s in segments)
        if any(p.startswith(self._admin_prefixes) for p in (path, decoded)):
            if identity is None:
                # AUTH_MODE=none: nobody is known to be an admin
                raise GatewayError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "this route needs an admin identity, and authentication is off",
                )
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED, "this route needs an admin identity"
            )

    def _limit(self, route: Route | None, identity: Identity | None) -> None:
        # AUTH_MODE=none has no token to count against (and behind a load balancer every
        # client would share one address): no limit
        if identity is None or route is None or route.http_method == "GET":
            return
        key = identity.rate_key or identity.name
        special = self._method_limiters.get(route.full_method)
        if special is not None:
            wait = special.limiter.take(key)
            if wait > 0:
                raise GatewayError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    special.refusal(wait),
                    headers={"Retry-After": retry_after_header(wait)},
                )
        if self._limiter is None:
            return
        wait = self._limiter.take(identity.rate_key or identity.name)
        if wait > 0:
            limiter = self._limiter
            raise GatewayError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many uploads: at most {limiter.burst} at once, then {limiter.rate:g} per "
                f"second; retry in {retry_after_header(wait)} s",
                headers={"Retry-After": retry_after_header(wait)},
            )


def _unauthenticated(error: AuthError) -> GatewayError:
    challenge = f'Bearer realm="{REALM}"'
    if error.error:
        description = error.message.replace("\\", "/").replace('"', "'")
        challenge += f', error="{error.error}", error_description="{description}"'
    # RFC 6750 would allow 400 for a malformed header; one status for every authentication
    # failure is simpler for clients, and the challenge's error code tells them apart
    return GatewayError(
        grpc.StatusCode.UNAUTHENTICATED, error.message, headers={"WWW-Authenticate": challenge}
    )


def _query_token(scope: Scope) -> str | None:
    text = scope.get("query_string", b"").decode("latin-1")
    if ACCESS_TOKEN_PARAM not in text:
        return None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=1000)
    except ValueError:
        return None  # the transcoder refuses the malformed query with its own message
    tokens = [value for name, value in pairs if name == ACCESS_TOKEN_PARAM]
    if len(tokens) > 1:
        raise _unauthenticated(AuthError(f"{ACCESS_TOKEN_PARAM} given twice", "invalid_request"))
    return tokens[0] if tokens else None
