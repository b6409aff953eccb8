"""The OpenAPI 3 document, generated from the same route table and message descriptors the
gateway serves, so the document cannot promise what the gateway does not do.

Schemas follow proto3 JSON as the gateway writes it (transcode.to_json): proto field names,
int64 as strings, Timestamps as RFC 3339 strings, enums by name, bytes as base64.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.gateway.routes import Route, RouteTable, is_map, is_repeated
from services.gateway.transcode import HEADER_FIELDS, RAW_BODIES, RawBody

Schema = dict[str, Any]

ERROR_SCHEMA = "Status"

_INTS: dict[int, Schema] = {
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {
        "type": "integer",
        "format": "int64",
        "minimum": 0,
        "maximum": 2**32 - 1,
    },
    FieldDescriptor.TYPE_FIXED32: {
        "type": "integer",
        "format": "int64",
        "minimum": 0,
        "maximum": 2**32 - 1,
    },
    # proto3 JSON writes 64-bit integers as strings (JavaScript numbers lose precision)
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}

_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {
        "type": "string",
        "description": "seconds with an 's' suffix, e.g. 1.5s",
    },
    "google.protobuf.FieldMask": {"type": "string", "description": "comma-separated field paths"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    "google.protobuf.DoubleValue": {"type": "number", "format": "double", "nullable": True},
    "google.protobuf.FloatValue": {"type": "number", "format": "float", "nullable": True},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64", "nullable": True},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64", "nullable": True},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32", "nullable": True},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int64", "nullable": True},
    "google.protobuf.BoolValue": {"type": "boolean", "nullable": True},
    "google.protobuf.StringValue": {"type": "string", "nullable": True},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte", "nullable": True},
}

_ERROR: Schema = {
    "type": "object",
    "description": "Every error: the gRPC status code (number), its message, and rich details.",
    "required": ["code", "message", "details"],
    "properties": {
        "code": {"type": "integer", "format": "int32", "description": "gRPC status code"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": _WELL_KNOWN["google.protobuf.Any"]},
    },
}

_GATEWAY_PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "operationId": "Gateway_Healthz",
            "tags": ["Gateway"],
            "summary": "The gateway process answers (liveness)",
            "responses": {"200": {"description": "alive"}},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "Gateway_Readyz",
            "tags": ["Gateway"],
            "summary": "Every gRPC backend answers grpc.health.v1 SERVING (readiness)",
            "responses": {
                "200": {"description": "ready, with per-backend detail"},
                "503": {"description": "a backend is not serving, with per-backend detail"},
            },
        }
    },
}


class _Schemas:
    """Collects the component schema of every message reachable from the routes."""

    def __init__(self) -> None:
        self.components: dict[str, Schema] = {}

    def ref(self, message: Descriptor) -> Schema:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.components:
            self.components[message.full_name] = {}  # placeholder: recursive messages terminate
            self.components[message.full_name] = self.message(message)
        return {"$ref": f"#/components/schemas/{message.full_name}"}

    def message(self, message: Descriptor, skip: frozenset[str] = frozenset()) -> Schema:
        properties = {f.name: self.field(f) for f in message.fields if f.name not in skip}
        schema: Schema = {"type": "object", "properties": properties}
        notes = [
            f"At most one of {', '.join(f.name for f in oneof.fields)} ({oneof.name})."
            for oneof in message.oneofs
            if len(oneof.fields) > 1 and not any(f.name in skip for f in oneof.fields)
        ]
        if notes:
            schema["description"] = " ".join(notes)
        return schema

    def field(self, field: FieldDescriptor) -> Schema:
        if is_map(field):
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        if is_repeated(field):
            return {"type": "array", "items": self.single(field)}
        return self.single(field)

    def single(self, field: FieldDescriptor) -> Schema:
        if field.type == FieldDescriptor.TYPE_MESSAGE or field.type == FieldDescriptor.TYPE_GROUP:
            return self.ref(field.message_type)
        if field.type == FieldDescriptor.TYPE_ENUM:
            return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        return dict(_INTS[field.type])


def build_openapi(
    table: RouteTable,
    *,
    title: str = "cadpipe API",
    version: str = "v1",
    raw_bodies: Mapping[str, RawBody] = RAW_BODIES,
    header_fields: Mapping[str, str] = HEADER_FIELDS,
    bearer_auth: bool = False,
    public_paths: Collection[str] = (),
) -> dict[str, Any]:
    """bearer_auth: every operation but those on public_paths (and the gateway's health)
    declares the bearer security scheme (services/gateway/guard.py enforces it)."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in table:
        operation = _operation(route, schemas, raw_bodies, header_fields)
        if bearer_auth:
            _secure(operation, route, public=route.path.openapi_path in public_paths)
        paths.setdefault(route.path.openapi_path, {})[route.http_method.lower()] = operation
    gateway_paths = copy.deepcopy(_GATEWAY_PATHS)
    security: dict[str, Any] = {}
    if bearer_auth:
        security = {"securitySchemes": copy.deepcopy(_SECURITY_SCHEMES)}
        for operations in gateway_paths.values():
            for operation in operations.values():
                operation["security"] = []  # probes carry no token
    paths.update(gateway_paths)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "REST bindings of the cadpipe gRPC services, derived from their google.api.http "
                "annotations. Errors are {code, message, details} with grpc-gateway v2's status "
                "mapping."
            ),
        },
        "tags": [
            {"name": s.rsplit(".", 1)[-1], "description": f"gRPC {s}"} for s in table.services()
        ]
        + [{"name": "Gateway", "description": "the gateway's own health"}],
        "paths": paths,
        "components": {
            "schemas": {ERROR_SCHEMA: _ERROR, **dict(sorted(schemas.components.items()))},
            **security,
        },
        **({"security": [{BEARER_SCHEME: []}]} if bearer_auth else {}),
    }


BEARER_SCHEME = "bearerAuth"
QUERY_TOKEN_SCHEME = "accessTokenQuery"

_SECURITY_SCHEMES: dict[str, Any] = {
    BEARER_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (cpt_..., from `python -m services.gateway tokens create`) "
        "or a JWT, in `Authorization: Bearer <token>`.",
    },
    QUERY_TOKEN_SCHEME: {
        "type": "apiKey",
        "in": "query",
        "name": "access_token",
        "description": "Event streams only (EventSource cannot send headers): the same token "
        "as a query parameter.",
    },
}


def _secure(operation: dict[str, Any], route: Route, *, public: bool) -> None:
    if public:
        operation["security"] = []
        return
    if route.server_streaming:
        operation["security"] = [{BEARER_SCHEME: []}, {QUERY_TOKEN_SCHEME: []}]
    error = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}
    operation["responses"]["401"] = {
        "description": "No valid bearer token (missing, malformed, forged, expired or revoked); "
        "`WWW-Authenticate: Bearer` says why",
        "content": {"application/json": {"schema": error}},
    }
    if route.http_method != "GET":
        operation["responses"]["429"] = {
            "description": "Too many uploads for this token; `Retry-After` says when to retry",
            "content": {"application/json": {"schema": error}},
        }


def _operation(
    route: Route,
    schemas: _Schemas,
    raw_bodies: Mapping[str, RawBody],
    header_fields: Mapping[str, str],
) -> dict[str, Any]:
    request = route.request_descriptor
    parameters: list[dict[str, Any]] = []
    for name in route.path.fields:
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": schemas.single(request.fields_by_name[name]),
            }
        )
    for field in route.query_fields():
        parameter: dict[str, Any] = {
            "name": field.name,
            "in": "query",
            "required": False,
            "schema": schemas.field(field),
        }
        if is_repeated(field):
            parameter.update(style="form", explode=True)
        parameters.append(parameter)
    for header, field_name in header_fields.items():
        if field_name in request.fields_by_name:
            parameters.append(
                {
                    "name": _header_case(header),
                    "in": "header",
                    "required": False,
                    "schema": schemas.single(request.fields_by_name[field_name]),
                    "description": f"Sets `{field_name}`.",
                }
            )
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "tags": [route.method.containing_service.name],
        "summary": route.method.name,
        "description": f"gRPC `{route.grpc_path}`.",
        "parameters": parameters,
        "responses": _responses(route, schemas),
    }
    if route.body:
        operation["requestBody"] = _request_body(route, schemas, raw_bodies.get(route.full_method))
    return operation


def _request_body(route: Route, schemas: _Schemas, raw: RawBody | None) -> dict[str, Any]:
    request = route.request_descriptor
    if route.body == "*":
        json_schema = schemas.message(request, skip=frozenset(route.path.fields))
    else:
        json_schema = schemas.field(request.fields_by_name[route.body])
    content: dict[str, Any] = {"application/json": {"schema": json_schema}}
    description = "proto3 JSON; path parameters win over the same fields in the body."
    if raw is not None:
        for kind in sorted(raw.content_types):
            content[kind] = {"schema": {"type": "string"}}
        description += f" Raw {', '.join(sorted(raw.content_types))} bodies fill `{raw.field}`"
        if raw.metadata_field:
            prefix = _header_case(raw.metadata_header_prefix)
            description += (
                f"; `{prefix}<key>` headers fill `{raw.metadata_field}` (keys lower-cased)"
            )
        description += "."
    return {
        "required": route.body == "*" and raw is None,
        "description": description,
        "content": content,
    }


def _responses(route: Route, schemas: _Schemas) -> dict[str, Any]:
    error = {
        "description": "Error (grpc-gateway v2 status mapping)",
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}
        },
    }
    message = schemas.ref(route.method.output_type)
    if route.server_streaming:
        ok = {
            "description": (
                f"Server-Sent Events: each `data:` line is one {route.method.output_type.full_name}"
                " as JSON; `: keepalive` comments keep the connection open; a failure ends"
                " the stream with an `event: error` whose data is the error body."
            ),
            "content": {
                "text/event-stream": {"schema": {"type": "string"}, "x-event-schema": message}
            },
        }
    else:
        ok = {"description": "OK", "content": {"application/json": {"schema": message}}}
    return {"200": ok, "default": error}


def _header_case(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))
