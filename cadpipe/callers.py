"""Who calls a gRPC service, and when to believe it (docs/security.md).

The gateway authenticates end users and forwards the caller on every gRPC call as metadata:

    x-cadpipe-identity        the identity name: printable ASCII, no spaces, 1 to 128 characters
    x-cadpipe-admin           "true" for an admin identity
    x-cadpipe-service-token   the internal token (SERVICE_TOKEN), when one is configured

Anyone who reaches a gRPC port can send such metadata, so a service believes it only from a
trusted peer. With SERVICE_TOKEN set, a trusted peer is one that sends that token; with mutual
TLS (GRPC_TLS_CLIENT_CA_FILE), the handshake already refused every peer without a client
certificate of that CA. In either mode a call without an identity is refused (UNAUTHENTICATED).
With neither configured the port is as open as its network: an identity that is sent is still
honoured (the gateway's enforcement repeated), and a call without one is anonymous, unrestricted
(the trusted-network mode of tests and of services called directly on a developer's machine).

The servicers read the caller of the current call with `current_caller()`; CallerInterceptor
sets it, or refuses the call, before any servicer code runs.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import pathlib
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc

from cadpipe.settings import GrpcSecuritySettings

logger = logging.getLogger(__name__)

IDENTITY_KEY = "x-cadpipe-identity"
ADMIN_KEY = "x-cadpipe-admin"
SERVICE_TOKEN_KEY = "x-cadpipe-service-token"

IDENTITY_PATTERN = re.compile(r"[\x21-\x7e]{1,128}")
"""Identity names travel as gRPC metadata and S3 object metadata: both want plain ASCII."""

PUBLIC_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""Probes (the kubelet sends no metadata) and reflection (the API's shape, no data)."""


class InvalidIdentity(ValueError):
    pass


def check_identity(name: str) -> str:
    if not IDENTITY_PATTERN.fullmatch(name):
        raise InvalidIdentity(
            "an identity is 1 to 128 printable ASCII characters without spaces"
        )
    return name


@dataclass(frozen=True)
class Caller:
    """The identity a call is made for. `name` "" is the anonymous caller of trusted-network
    mode, who may do anything (as before identities existed)."""

    name: str = ""
    admin: bool = False

    @property
    def anonymous(self) -> bool:
        return not self.name

    @property
    def unrestricted(self) -> bool:
        return self.anonymous or self.admin

    def may_access(self, owner: str | None) -> bool:
        """Whether this caller may see a project with this owner (None: no such project,
        "": a project without an owner, made before identities or by an anonymous caller)."""
        return self.unrestricted or (bool(owner) and owner == self.name)

    def metadata(self) -> list[tuple[str, str]]:
        """What the gateway sends for this caller."""
        if self.anonymous:
            return []
        return [(IDENTITY_KEY, self.name), (ADMIN_KEY, "true" if self.admin else "false")]


ANONYMOUS = Caller()

_current: contextvars.ContextVar[Caller] = contextvars.ContextVar(
    "cadpipe_caller", default=ANONYMOUS
)


def current_caller() -> Caller:
    """The caller of the RPC being served (ANONYMOUS outside CallerInterceptor's calls)."""
    return _current.get()


class Unauthenticated(Exception):
    pass


@dataclass(frozen=True)
class CallerPolicy:
    service_token: str | None = None
    mutual_tls: bool = False

    @classmethod
    def from_settings(cls, settings: GrpcSecuritySettings) -> CallerPolicy:
        """The policy of a service's gRPC port; warns, once, when it is open to anyone."""
        token = settings.service_token.get_secret_value() if settings.service_token else None
        policy = cls(service_token=token, mutual_tls=bool(settings.grpc_tls_client_ca_file))
        if not policy.peers_authenticated:
            logger.warning(
                "no SERVICE_TOKEN and no mutual TLS: whoever reaches the gRPC port may act "
                "for any identity (docs/security.md)"
            )
        return policy

    @property
    def peers_authenticated(self) -> bool:
        return bool(self.service_token) or self.mutual_tls

    def identify(
        self, metadata: Iterable[tuple[str, Any]], *, need_identity: bool = True
    ) -> Caller:
        """The caller named by the call's metadata; Unauthenticated when it is not to be
        believed. The messages never repeat what was sent."""
        values: dict[str, list[str]] = {}
        for key, value in metadata:
            if isinstance(value, str):
                values.setdefault(key, []).append(value)
        if self.service_token:
            sent = values.get(SERVICE_TOKEN_KEY, [])
            if len(sent) != 1 or not hmac.compare_digest(
                sent[0].encode(), self.service_token.encode()
            ):
                raise Unauthenticated(
                    f"the call is not from a trusted service ({SERVICE_TOKEN_KEY} missing or wrong)"
                )
        names = values.get(IDENTITY_KEY, [])
        if not names:
            if self.peers_authenticated and need_identity:
                raise Unauthenticated(f"the call names no caller ({IDENTITY_KEY} missing)")
            return ANONYMOUS
        if len(names) > 1:
            raise Unauthenticated(f"the call names more than one caller ({IDENTITY_KEY})")
        try:
            name = check_identity(names[0])
        except InvalidIdentity as error:
            raise Unauthenticated(f"{IDENTITY_KEY}: {error}") from None
        admin = values.get(ADMIN_KEY, ["false"]) == ["true"]
        return Caller(name=name, admin=admin)


Handler: TypeAlias = Any
"""A grpc.RpcMethodHandler (grpc ships no type information for it)."""


class CallerInterceptor(grpc.aio.ServerInterceptor):
    """Identifies the caller of every call except health and reflection, before the servicer
    runs: refused with UNAUTHENTICATED, or served with current_caller() set."""

    def __init__(
        self,
        policy: CallerPolicy,
        *,
        public_methods: Iterable[str] = (),
        admin_methods: Iterable[str] = (),
    ) -> None:
        """public_methods (e.g. "/cadpipe.v1.MonitoringService/GetHealth"): served to a
        trusted peer that names no caller (the gateway's public routes), as ANONYMOUS; they
        must not depend on who calls. admin_methods: method path prefixes (e.g.
        "/cadpipe.v1.MonitoringService/") refused with PERMISSION_DENIED to a named caller
        who is not an admin; public methods are exempt."""
        self._policy = policy
        self._public = frozenset(public_methods)
        self._admin = tuple(admin_methods)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None or method.startswith(PUBLIC_METHOD_PREFIXES):
            return handler
        metadata: Sequence[tuple[str, Any]] = (
            handler_call_details.invocation_metadata or ()  # type: ignore[attr-defined]
        )
        try:
            caller = self._policy.identify(metadata, need_identity=method not in self._public)
        except Unauthenticated as error:
            logger.info("%s refused: %s", method, error)
            return _refusing(handler, grpc.StatusCode.UNAUTHENTICATED, str(error))
        admin_only = method.startswith(self._admin) and method not in self._public
        if admin_only and not caller.unrestricted:
            logger.info("%s refused: %s is not an admin", method, caller.name)
            return _refusing(
                handler, grpc.StatusCode.PERMISSION_DENIED, "this method needs an admin identity"
            )
        return _serving_as(handler, caller)


def _refusing(handler: Handler, code: grpc.StatusCode, message: str) -> Handler:
    async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    async def abort_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - abort raises; this makes the function a generator

    return _like(handler, abort, abort_stream)


def _serving_as(handler: Handler, caller: Caller) -> Handler:
    # Each RPC runs in its own asyncio task: the value set here is that call's alone.
    unary = handler.unary_unary
    stream = handler.unary_stream

    async def serve(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        _current.set(caller)
        assert unary is not None
        return await unary(request, context)

    async def serve_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        _current.set(caller)
        assert stream is not None
        async for item in stream(request, context):
            yield item

    return _like(handler, serve, serve_stream)


def _like(handler: Handler, unary: Any, stream: Any) -> Handler:
    """A handler of the same kind and serializers as `handler` running another behaviour."""
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    # client-streaming methods: cadpipe has none; refuse rather than serve unidentified
    raise TypeError("CallerInterceptor handles unary and server-streaming methods only")


# --- TLS ----------------------------------------------------------------------------------


def _read(path: str) -> bytes:
    return pathlib.Path(path).read_bytes()


def server_credentials(settings: GrpcSecuritySettings) -> grpc.ServerCredentials | None:
    """TLS for a gRPC server (GRPC_TLS_CERT_FILE, GRPC_TLS_KEY_FILE), mutual TLS when
    GRPC_TLS_CLIENT_CA_FILE names the CA whose client certificates are accepted; None for a
    plaintext port."""
    if not settings.grpc_tls_cert_file or not settings.grpc_tls_key_file:
        return None
    client_ca = settings.grpc_tls_client_ca_file
    return grpc.ssl_server_credentials(
        [(_read(settings.grpc_tls_key_file), _read(settings.grpc_tls_cert_file))],
        root_certificates=_read(client_ca) if client_ca else None,
        require_client_auth=bool(client_ca),
    )


def channel_credentials(
    ca_file: str, cert_file: str | None = None, key_file: str | None = None
) -> grpc.ChannelCredentials:
    """TLS for a client channel: servers verified against `ca_file`; with a certificate and
    key, this client presents them (mutual TLS)."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file),
        private_key=_read(key_file) if key_file else None,
        certificate_chain=_read(cert_file) if cert_file else None,
    )
