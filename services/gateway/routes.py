"""The REST routes, derived from the `google.api.http` annotations of the services in the
generated descriptors, so that REST, gRPC and the OpenAPI document cannot drift apart.

Path templates: literal segments and `{field}` (or `{field=*}`) variables naming a singular
scalar field of the request. Anything else the HttpRule grammar allows (`**`, multi-segment
variables, nested field paths, `:verb`, `response_body`, client streaming) is refused when the
table is built, so a proto change the gateway cannot serve fails at start, not at a request.

Matching works on the raw, still percent-encoded path: each segment is split on `/` first and
decoded after, so `a%2Fb` is one segment whose value is `a/b` (the backend's validation then
refuses it), and `..%2Fx` never turns into a path traversal here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from urllib.parse import quote, unquote_to_bytes

import grpc
from google.api import annotations_pb2, http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor, MethodDescriptor
from google.protobuf.message import Message
from starlette.types import Scope

from services.gateway.errors import GatewayError

logger = logging.getLogger(__name__)

HTTP_VERBS = ("get", "put", "post", "delete", "patch")

_VARIABLE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(?:=\*)?\}$")
# RFC 3986 pchar without ':' (the HttpRule verb separator), '*' (wildcards) and '%' (a literal
# is matched against the decoded path, so it is written decoded)
_LITERAL = re.compile(r"^[A-Za-z0-9._~!$&'()+,;=@-]+$")


class RouteError(ValueError):
    """An annotation this gateway cannot serve (raised while the table is built)."""


@dataclass(frozen=True)
class Segment:
    """A literal path segment, or (literal None) a variable bound to a request field."""

    literal: str | None = None
    field: str | None = None


@dataclass(frozen=True)
class PathTemplate:
    template: str
    segments: tuple[Segment, ...]

    @classmethod
    def parse(cls, template: str) -> PathTemplate:
        if not template.startswith("/"):
            raise RouteError(f"path template {template!r} must start with '/'")
        segments: list[Segment] = []
        for part in template[1:].split("/"):
            variable = _VARIABLE.match(part)
            if variable:
                segments.append(Segment(field=variable.group(1)))
            elif _LITERAL.match(part):
                segments.append(Segment(literal=part))
            else:
                raise RouteError(
                    f"path template {template!r}: segment {part!r} is not supported "
                    "(only literals and {field} variables)"
                )
        fields = [s.field for s in segments if s.field]
        if len(fields) != len(set(fields)):
            raise RouteError(f"path template {template!r} binds a field twice")
        return cls(template, tuple(segments))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(s.field for s in self.segments if s.field)

    @property
    def openapi_path(self) -> str:
        """The template as OpenAPI writes it: `{field}` for every variable."""
        return "/" + "/".join(
            s.literal if s.literal is not None else f"{{{s.field}}}" for s in self.segments
        )

    def match(self, raw_segments: Sequence[bytes]) -> dict[str, bytes] | None:
        """The percent-decoded value of every variable, or None when the path does not fit.
        A variable matches any single segment, empty included: what a valid value is belongs
        to the backend, which answers with a message the client can act on."""
        if len(raw_segments) != len(self.segments):
            return None
        values: dict[str, bytes] = {}
        for segment, raw in zip(self.segments, raw_segments, strict=True):
            if segment.literal is not None:
                if raw != segment.literal.encode():
                    return None
            else:
                assert segment.field is not None
                values[segment.field] = raw
        return values

    def specificity(self) -> tuple[int, ...]:
        """Sorts literal segments before variables, position by position."""
        return tuple(0 if s.literal is not None else 1 for s in self.segments)


@dataclass(frozen=True)
class Route:
    http_method: str
    path: PathTemplate
    body: str
    """'' (no body), '*' (the whole request) or the name of the one field the body fills."""
    method: MethodDescriptor
    request_class: type[Message]
    response_class: type[Message]

    @property
    def service(self) -> str:
        return str(self.method.containing_service.full_name)

    @property
    def full_method(self) -> str:
        """`cadpipe.v1.ScriptService.UploadScript`"""
        return f"{self.service}.{self.method.name}"

    @property
    def grpc_path(self) -> str:
        """`/cadpipe.v1.ScriptService/UploadScript`, as the channel calls it."""
        return f"/{self.service}/{self.method.name}"

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def operation_id(self) -> str:
        return f"{self.method.containing_service.name}_{self.method.name}"

    @property
    def request_descriptor(self) -> Descriptor:
        return self.method.input_type

    def query_fields(self) -> tuple[FieldDescriptor, ...]:
        """Fields a query parameter may set: scalars (single or repeated) not bound by the path
        or the body. With `body: "*"` the body carries everything, so there are none."""
        if self.body == "*":
            return ()
        bound = set(self.path.fields) | ({self.body} if self.body else set())
        return tuple(
            f
            for f in self.request_descriptor.fields
            if f.name not in bound and f.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE
        )


@dataclass(frozen=True)
class Match:
    route: Route
    path_params: dict[str, bytes]


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        ordered = sorted(routes, key=lambda r: (len(r.path.segments), r.path.specificity()))
        seen: set[tuple[str, tuple[str | None, ...]]] = set()
        for route in ordered:
            # variables match the same paths whatever field they name
            key = (route.http_method, tuple(s.literal for s in route.path.segments))
            if key in seen:
                raise RouteError(
                    f"two methods are bound to {route.http_method} {route.path.template}"
                )
            seen.add(key)
        self.routes: tuple[Route, ...] = tuple(ordered)

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes)

    def __len__(self) -> int:
        return len(self.routes)

    def services(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.service for r in self.routes))

    def lookup(self, http_method: str, raw_path: str) -> Match:
        """The route for this request; GatewayError NOT_FOUND (404) when no template fits the
        path, UNIMPLEMENTED with HTTP 405 and `Allow` when one fits but not for this method."""
        raw_segments = split_raw_path(raw_path)
        allowed: list[str] = []
        for route in self.routes:
            params = route.path.match(raw_segments)
            if params is None:
                continue
            if route.http_method == http_method:
                return Match(route, params)
            allowed.append(route.http_method)
        if allowed:
            allow = ", ".join(sorted(set(allowed)))
            raise GatewayError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"method {http_method} is not allowed on {raw_path}; allowed: {allow}",
                http=405,
                headers={"Allow": allow},
            )
        raise GatewayError(grpc.StatusCode.NOT_FOUND, f"no route for {http_method} {raw_path}")


ROUTED_STATE = "cadpipe.routed"
"""scope["state"] key of the request's Routed: looked up once, by whichever layer asks first."""


@dataclass(frozen=True)
class Routed:
    """One request's raw path and route, or the GatewayError that says why it has none."""

    raw_path: str
    match: Match | None
    error: GatewayError | None


def raw_path_of(scope: Scope) -> str:
    """The path as sent, still percent-encoded (split_raw_path decodes per segment)."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.decode("latin-1").split("?", 1)[0]
    return quote(scope["path"])


def route_of(table: RouteTable, scope: Scope) -> Routed:
    """The request's route, looked up once per request and shared by the metrics, the guard
    and the transcoder (kept in the scope's state)."""
    state = scope.setdefault("state", {})
    routed = state.get(ROUTED_STATE)
    if routed is None:
        raw_path = raw_path_of(scope)
        try:
            routed = Routed(raw_path, table.lookup(scope["method"], raw_path), None)
        except GatewayError as error:
            routed = Routed(raw_path, None, error)
        state[ROUTED_STATE] = routed
    return routed  # type: ignore[no-any-return]


def split_raw_path(raw_path: str) -> list[bytes]:
    """Segments of a raw (percent-encoded) path, each decoded to bytes after splitting."""
    if not raw_path.startswith("/"):
        raw_path = "/" + raw_path
    return [unquote_to_bytes(part) for part in raw_path[1:].split("/")]


def rules(method: MethodDescriptor) -> list[http_pb2.HttpRule]:
    """The method's HttpRule and its additional_bindings (which may not nest further)."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    rule = options.Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def derive_routes(files: Iterable[FileDescriptor]) -> RouteTable:
    routes: list[Route] = []
    for file in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                for rule in rules(method):
                    routes.append(_route(method, rule))
    return RouteTable(routes)


def derive_routes_from_modules(modules: Iterable[ModuleType]) -> RouteTable:
    """From generated `*_pb2` modules (their DESCRIPTOR)."""
    return derive_routes(module.DESCRIPTOR for module in modules)


def default_modules() -> list[ModuleType]:
    """The cadpipe API the gateway serves."""
    from cadpipe.v1 import (
        artifacts_pb2,
        generation_pb2,
        monitoring_pb2,
        scripts_pb2,
        status_pb2,
    )

    return [scripts_pb2, status_pb2, artifacts_pb2, monitoring_pb2, generation_pb2]


def _route(method: MethodDescriptor, rule: http_pb2.HttpRule) -> Route:
    where = str(method.full_name)
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise RouteError(f"{where}: google.api.http has no method and path")
    if pattern == "custom":
        raise RouteError(f"{where}: custom HTTP method {rule.custom.kind!r} is not supported")
    if rule.response_body:
        raise RouteError(f"{where}: response_body is not supported")
    if method.client_streaming:
        raise RouteError(f"{where}: client streaming has no REST binding here")
    template = PathTemplate.parse(getattr(rule, pattern))
    request = method.input_type
    for name in template.fields:
        field = request.fields_by_name.get(name)
        if field is None:
            raise RouteError(
                f"{where}: path variable {{{name}}} is not a field of {request.full_name}"
            )
        if is_repeated(field) or field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            raise RouteError(f"{where}: path variable {{{name}}} must be a singular scalar field")
    if rule.body not in ("", "*"):
        if rule.body not in request.fields_by_name:
            raise RouteError(
                f"{where}: body field {rule.body!r} is not a field of {request.full_name}"
            )
        if rule.body in template.fields:
            raise RouteError(f"{where}: body field {rule.body!r} is also a path variable")
    return Route(
        http_method=pattern.upper(),
        path=template,
        body=rule.body,
        method=method,
        request_class=message_factory.GetMessageClass(method.input_type),
        response_class=message_factory.GetMessageClass(method.output_type),
    )


def is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def is_map(field: FieldDescriptor) -> bool:
    message = field.message_type
    return bool(message is not None and message.GetOptions().map_entry)
