"""The OpenAPI document generated from the descriptors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from gateway_protos import Rpc, make_api
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec

from cadpipe.v1 import scripts_pb2, status_pb2
from services.gateway.openapi import build_openapi
from services.gateway.routes import default_modules, derive_routes, derive_routes_from_modules
from services.gateway.transcode import to_json

TABLE = derive_routes_from_modules(default_modules())
DOC = build_openapi(TABLE)


def conforms(instance: Any, component: str, document: dict[str, Any] = DOC) -> bool:
    schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    return OAS30Validator(schema).is_valid(instance)


def test_the_document_is_valid_openapi_3() -> None:
    validate_spec(DOC)  # raises on any violation of the OpenAPI 3.0 schema
    assert DOC["openapi"].startswith("3.")


def test_every_annotated_method_is_an_operation_on_its_path() -> None:
    operations = {
        (method.upper(), path, op["operationId"])
        for path, item in DOC["paths"].items()
        for method, op in item.items()
    }
    for route in TABLE:
        assert (route.http_method, route.path.openapi_path, route.operation_id) in operations
    assert len(operations) == len(TABLE) + 2  # and /healthz, /readyz
    assert {"/healthz", "/readyz"} <= set(DOC["paths"])


def _operation(path: str, method: str = "get") -> dict[str, Any]:
    operation = DOC["paths"][path][method]
    assert isinstance(operation, dict)
    return operation


def _parameters(path: str, method: str = "get") -> dict[tuple[str, str], dict[str, Any]]:
    return {(p["in"], p["name"]): p for p in _operation(path, method)["parameters"]}


def test_path_and_query_parameters_carry_their_types() -> None:
    get_script = _parameters("/api/projects/{project}/script/{version}")
    assert get_script[("path", "project")] == {
        "name": "project",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    assert get_script[("path", "version")]["schema"] == {"type": "integer", "format": "int32"}
    assert set(get_script) == {("path", "project"), ("path", "version")}

    list_scripts = _parameters("/api/projects/{project}/scripts")
    assert list_scripts[("query", "page_size")]["schema"] == {"type": "integer", "format": "int32"}
    assert list_scripts[("query", "page_token")]["schema"] == {"type": "string"}
    assert not list_scripts[("query", "page_size")]["required"]

    download = _parameters("/api/projects/{project}/download/{format}")
    assert set(download) == {("path", "project"), ("path", "format"), ("query", "version")}


def test_the_upload_body_is_the_request_without_path_fields_or_a_raw_script() -> None:
    operation = _operation("/api/projects/{project}/upload-script", "post")
    content = operation["requestBody"]["content"]
    body = content["application/json"]["schema"]
    assert set(body["properties"]) == {"script", "script_bytes", "metadata", "idempotency_key"}
    assert body["properties"]["script_bytes"] == {"type": "string", "format": "byte"}
    assert body["properties"]["metadata"] == {
        "type": "object",
        "additionalProperties": {"type": "string"},
    }
    assert "At most one of script, script_bytes" in body["description"]
    assert content["text/x-python"] == {"schema": {"type": "string"}}
    assert content["text/plain"] == {"schema": {"type": "string"}}
    assert "X-Cadpipe-Meta-<key>" in operation["requestBody"]["description"]
    headers = _parameters("/api/projects/{project}/upload-script", "post")
    assert headers[("header", "Idempotency-Key")]["schema"] == {"type": "string"}


def test_responses_reference_message_schemas_and_errors_the_status_schema() -> None:
    responses = _operation("/api/projects/{project}/script/{version}")["responses"]
    assert responses["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/cadpipe.v1.GetScriptResponse"
    }
    assert responses["default"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Status"
    }
    version = DOC["components"]["schemas"]["cadpipe.v1.ScriptVersion"]["properties"]
    assert version["size_bytes"] == {"type": "string", "format": "int64"}
    assert version["uploaded_at"] == {"type": "string", "format": "date-time"}
    assert version["version"] == {"type": "integer", "format": "int32"}


def test_the_event_stream_is_documented_as_server_sent_events() -> None:
    ok = _operation("/api/projects/{project}/events")["responses"]["200"]
    stream = ok["content"]["text/event-stream"]
    assert stream["x-event-schema"] == {"$ref": "#/components/schemas/cadpipe.v1.ProjectStatus"}
    assert "keepalive" in ok["description"]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_every_reference_resolves() -> None:
    schemas = DOC["components"]["schemas"]
    refs = set(_refs(DOC))
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.removeprefix("#/components/schemas/") in schemas


def test_what_the_gateway_writes_conforms_to_the_document() -> None:
    response = scripts_pb2.GetScriptResponse(
        script=scripts_pb2.ScriptVersion(
            project="p", version=2, size_bytes=2**40, metadata={"a": "b"}
        ),
        content="x = 1\n",
    )
    response.script.uploaded_at.FromSeconds(1_800_000_000)
    assert conforms(to_json(response), "cadpipe.v1.GetScriptResponse")
    assert conforms(
        to_json(status_pb2.ProjectStatus(project="p", state="completed")),
        "cadpipe.v1.ProjectStatus",
    )
    assert not conforms({"script": {"version": "two"}}, "cadpipe.v1.GetScriptResponse")
    assert conforms({"code": 3, "message": "bad", "details": []}, "Status")
    assert not conforms({"code": "3", "message": "bad", "details": []}, "Status")


@pytest.mark.parametrize(
    ("field", "schema"),
    [
        ("big", {"type": "string", "format": "int64"}),
        ("u", {"type": "string", "format": "uint64"}),
        ("flag", {"type": "boolean"}),
        ("ratio", {"type": "number", "format": "double"}),
        ("small", {"type": "number", "format": "float"}),
        ("kind", {"type": "string", "enum": ["KIND_UNSPECIFIED", "KIND_A"]}),
        ("tags", {"type": "array", "items": {"type": "string"}}),
        ("labels", {"type": "object", "additionalProperties": {"type": "string"}}),
    ],
)
def test_field_types_map_to_proto3_json_schemas(field: str, schema: dict[str, Any]) -> None:
    api = make_api([Rpc("Get", {"get": "/v/{id}"})])
    document = build_openapi(derive_routes([api]))
    request = document["components"]["schemas"]
    name = next(n for n in request if n.endswith(".Req"))
    assert request[name]["properties"][field] == schema
    inner = request[name]["properties"]["inner"]
    assert inner["$ref"].endswith(".Inner")
    validate_spec(document)


def test_repeated_query_parameters_are_exploded_arrays() -> None:
    api = make_api([Rpc("Get", {"get": "/v/{id}"})])
    document = build_openapi(derive_routes([api]))
    tags = next(p for p in document["paths"]["/v/{id}"]["get"]["parameters"] if p["name"] == "tags")
    assert tags == {
        "name": "tags",
        "in": "query",
        "required": False,
        "schema": {"type": "array", "items": {"type": "string"}},
        "style": "form",
        "explode": True,
    }
