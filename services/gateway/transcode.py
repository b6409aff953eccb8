"""HTTP request → gRPC request message, and gRPC message → JSON. Pure: no I/O, no server.

How an HTTP request fills the request message (google.api.http semantics):
  1. the body: with `body: "*"` the JSON object is the whole request, with `body: "field"` it
     fills that one field (proto3 JSON via json_format.ParseDict: unknown fields and wrong types
     are refused with the parser's message). An empty body is `{}`.
     A few methods also take a raw body (RAW_BODIES): UploadScript accepts the script file as
     `text/x-python` or `text/plain`, its metadata from `X-Cadpipe-Meta-<key>` headers.
  2. the path variables, percent-decoded, which win over anything the body said for them;
  3. query parameters for the remaining scalar fields (`?version=3`), by proto or JSON name;
  4. headers bound to fields: `Idempotency-Key` → `idempotency_key`.
Every refusal is a GatewayError INVALID_ARGUMENT (400) saying which input is wrong, except a
content type the route cannot read (415).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from services.gateway.errors import GatewayError, invalid_argument
from services.gateway.routes import Match, Route, is_map, is_repeated


@dataclass(frozen=True)
class RawBody:
    """A method that also takes its payload as a raw body instead of JSON."""

    field: str
    """The bytes (or string) field that receives the body."""
    content_types: frozenset[str]
    metadata_field: str | None = None
    """A map<string, string> field filled from headers named `metadata_header_prefix` + key."""
    metadata_header_prefix: str = "x-cadpipe-meta-"


# What google.api.http cannot express; checked against the descriptors by check_bindings().
RAW_BODIES: dict[str, RawBody] = {
    "cadpipe.v1.ScriptService.UploadScript": RawBody(
        field="script_bytes",
        content_types=frozenset({"text/x-python", "text/plain"}),
        metadata_field="metadata",
    ),
}

# Header (lower case) → request field, for every request message that has that field.
HEADER_FIELDS: dict[str, str] = {"idempotency-key": "idempotency_key"}

# curl -d sends application/x-www-form-urlencoded unless told otherwise; a JSON document is what
# such a client means, so it is read as JSON (and refused as JSON if it is not).
JSON_CONTENT_TYPES = frozenset(
    {"", "application/json", "text/json", "application/x-www-form-urlencoded"}
)

_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_FLOAT = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_FLOAT_NAMES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
_INT_RANGES: dict[int, tuple[int, int, str]] = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1, "int32"),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1, "int64"),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1, "uint32"),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1, "uint64"),
}
_FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class HttpInput:
    """What the HTTP layer hands over: the raw pieces, nothing interpreted yet."""

    path_params: Mapping[str, bytes] = field(default_factory=dict)
    query: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    content_type: str = ""
    headers: Mapping[str, bytes] = field(default_factory=dict)
    """Lower-case names; raw values (HTTP header bytes)."""


def check_bindings(routes: Sequence[Route]) -> None:
    """Raw-body bindings must name real fields of methods that take a body (run at start)."""
    by_method = {r.full_method: r for r in routes}
    for method, raw in RAW_BODIES.items():
        route = by_method.get(method)
        if route is None:
            continue
        fields = route.request_descriptor.fields_by_name
        if route.body != "*" or raw.field not in fields:
            raise ValueError(
                f"raw body binding for {method}: needs body '*' and field {raw.field!r}"
            )
        if raw.metadata_field and not is_map(fields[raw.metadata_field]):
            raise ValueError(f"raw body binding for {method}: {raw.metadata_field!r} is not a map")


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def build_request(
    match: Match, http: HttpInput, *, ignored_query_params: frozenset[str] = frozenset()
) -> Message:
    route = match.route
    request = route.request_class()
    if route.body:
        _fill_from_body(route, request, http)
    for name, raw in match.path_params.items():
        text = _utf8(raw, f"path parameter {name!r}")
        _set_scalar(
            request, request.DESCRIPTOR.fields_by_name[name], text, f"path parameter {name!r}"
        )
    _fill_from_query(route, request, http.query, ignored_query_params)
    _fill_from_headers(request, http.headers)
    return request


def to_json(message: Message) -> dict[str, Any]:
    """Proto3 JSON with the proto field names and every field present, defaults included, so a
    client never has to know that 0, "" and [] are left out on the wire (int64 as strings, as
    proto3 JSON has them)."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _fill_from_body(route: Route, request: Message, http: HttpInput) -> None:
    kind = media_type(http.content_type)
    raw = RAW_BODIES.get(route.full_method)
    if raw is not None and kind in raw.content_types:
        _fill_raw(raw, request, http)
        return
    if kind not in JSON_CONTENT_TYPES and not (
        kind.startswith("application/") and kind.endswith("+json")
    ):
        accepted = ["application/json", *sorted(raw.content_types if raw else ())]
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"content type {kind!r} is not accepted here; send one of: {', '.join(accepted)}",
            http=415,
        )
    document = _json(http.body)
    if route.body == "*":
        if not isinstance(document, dict):
            raise invalid_argument(
                f"request body must be a JSON object, got {_json_kind(document)}"
            )
        _parse_dict(document, request)
    else:
        _parse_dict({route.body: document}, request)


def _fill_raw(raw: RawBody, request: Message, http: HttpInput) -> None:
    descriptor = request.DESCRIPTOR.fields_by_name[raw.field]
    if descriptor.type == FieldDescriptor.TYPE_BYTES:
        setattr(request, raw.field, http.body)
    else:
        setattr(request, raw.field, _utf8(http.body, "request body"))
    if raw.metadata_field:
        target = getattr(request, raw.metadata_field)
        for name, value in http.headers.items():
            if name.startswith(raw.metadata_header_prefix) and len(name) > len(
                raw.metadata_header_prefix
            ):
                key = name[len(raw.metadata_header_prefix) :]
                target[key] = _utf8(value, f"header {name!r}")


def _json(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except UnicodeDecodeError as error:
        raise invalid_argument(f"request body is not UTF-8: {error}") from None
    except json.JSONDecodeError as error:
        raise invalid_argument(f"request body is not valid JSON: {error}") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise invalid_argument(f"request body: {error}") from None
    except RecursionError:
        raise invalid_argument("request body is nested too deeply") from None


def _parse_dict(document: dict[str, Any], request: Message) -> None:
    try:
        json_format.ParseDict(document, request)
    except json_format.ParseError as error:
        raise invalid_argument(f"request body: {error}") from None
    except (ValueError, TypeError, RecursionError) as error:
        # values the parser lets through but the message refuses (e.g. lone surrogates)
        raise invalid_argument(f"request body: {error}") from None


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _fill_from_query(
    route: Route, request: Message, query: Sequence[tuple[str, str]], ignored: frozenset[str]
) -> None:
    fields = _query_fields(route)
    seen: set[str] = set()
    for name, value in query:
        if name in ignored:
            continue
        descriptor = fields.get(name)
        if descriptor is None:
            if route.body == "*":
                raise invalid_argument(
                    f"query parameter {name!r} is not accepted: "
                    "this route takes its fields from the body"
                )
            accepted = ", ".join(sorted({f.name for f in fields.values()})) or "none"
            raise invalid_argument(f"unknown query parameter {name!r}; accepted: {accepted}")
        where = f"query parameter {name!r}"
        if is_repeated(descriptor):
            getattr(request, descriptor.name).append(_scalar(descriptor, value, where))
            continue
        if descriptor.name in seen:
            raise invalid_argument(f"{where} is given more than once")
        seen.add(descriptor.name)
        _set_scalar(request, descriptor, value, where)


def _query_fields(route: Route) -> dict[str, FieldDescriptor]:
    out: dict[str, FieldDescriptor] = {}
    for descriptor in route.query_fields():
        out[descriptor.name] = descriptor
        out[descriptor.json_name] = descriptor
    return out


def _fill_from_headers(request: Message, headers: Mapping[str, bytes]) -> None:
    fields = request.DESCRIPTOR.fields_by_name
    for header, name in HEADER_FIELDS.items():
        raw = headers.get(header)
        if raw is None or name not in fields:
            continue
        value = _utf8(raw, f"header {header!r}")
        current = getattr(request, name)
        if current and current != value:
            raise invalid_argument(f"header {header!r} and body field {name!r} disagree")
        _set_scalar(request, fields[name], value, f"header {header!r}")


def _set_scalar(request: Message, descriptor: FieldDescriptor, text: str, where: str) -> None:
    value = _scalar(descriptor, text, where)
    try:
        setattr(request, descriptor.name, value)
    except (ValueError, TypeError) as error:
        raise invalid_argument(f"{where}: {error}") from None


def _scalar(descriptor: FieldDescriptor, text: str, where: str) -> Any:
    """A text value (path, query, header) as the field's type, or a message saying why not."""
    cpp = descriptor.cpp_type
    if cpp in _INT_RANGES:
        low, high, kind = _INT_RANGES[cpp]
        if not _INTEGER.match(text):
            raise invalid_argument(f"{where} must be an integer ({kind}), got {text!r}")
        number = int(text)
        if not low <= number <= high:
            raise invalid_argument(f"{where} is out of range for {kind}: {text}")
        return number
    if cpp in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        if text in _FLOAT_NAMES:
            return _FLOAT_NAMES[text]
        if not _FLOAT.match(text):
            raise invalid_argument(f"{where} must be a number, got {text!r}")
        real = float(text)
        limit = _FLOAT32_MAX if cpp == FieldDescriptor.CPPTYPE_FLOAT else math.inf
        if math.isinf(real) or abs(real) > limit:
            raise invalid_argument(f"{where} is out of range: {text}")
        return real
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        if text.lower() not in _BOOLS:
            raise invalid_argument(f"{where} must be true or false, got {text!r}")
        return _BOOLS[text.lower()]
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        return _enum(descriptor, text, where)
    if descriptor.type == FieldDescriptor.TYPE_BYTES:
        return _base64(text, where)
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        return text
    raise invalid_argument(f"{where} cannot be set from text")


def _enum(descriptor: FieldDescriptor, text: str, where: str) -> int:
    enum = descriptor.enum_type
    if text in enum.values_by_name:
        return int(enum.values_by_name[text].number)
    if _INTEGER.match(text) and int(text) in enum.values_by_number:
        return int(text)
    names = ", ".join(v.name for v in enum.values)
    raise invalid_argument(f"{where} must be one of {names}, got {text!r}")


def _base64(text: str, where: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument(f"{where} must be base64, got {text!r}") from None


def _utf8(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_argument(f"{where} is not valid UTF-8") from None
