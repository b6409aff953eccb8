"""Route derivation from google.api.http annotations, and path matching."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from gateway_protos import Rpc, make_api
from google.api import annotations_pb2

from services.gateway.errors import GatewayError
from services.gateway.routes import (
    PathTemplate,
    RouteError,
    RouteTable,
    Segment,
    default_modules,
    derive_routes,
    derive_routes_from_modules,
    route_of,
    split_raw_path,
)

CADPIPE_REST = {
    ("POST", "/api/projects/{project}/upload-script", "cadpipe.v1.ScriptService.UploadScript"),
    ("GET", "/api/projects/{project}/scripts", "cadpipe.v1.ScriptService.ListScripts"),
    ("GET", "/api/projects", "cadpipe.v1.ScriptService.ListProjects"),
    ("GET", "/api/projects/{project}/report", "cadpipe.v1.ArtifactService.GetReport"),
    ("GET", "/api/projects/{project}/script/{version}", "cadpipe.v1.ScriptService.GetScript"),
    ("GET", "/api/projects/{project}/status", "cadpipe.v1.StatusService.GetStatus"),
    ("GET", "/api/projects/{project}/events", "cadpipe.v1.StatusService.WatchStatus"),
    ("GET", "/api/projects/{project}/outputs", "cadpipe.v1.ArtifactService.ListOutputs"),
    (
        "GET",
        "/api/projects/{project}/download/{format}",
        "cadpipe.v1.ArtifactService.GetDownloadUrl",
    ),
    ("GET", "/api/projects/{project}/logs", "cadpipe.v1.ArtifactService.ListLogs"),
    ("GET", "/api/projects/{project}/logs/{name}", "cadpipe.v1.ArtifactService.GetLog"),
    ("GET", "/api/monitoring/health", "cadpipe.v1.MonitoringService.GetHealth"),
    ("GET", "/api/monitoring/s3/status", "cadpipe.v1.MonitoringService.GetS3Status"),
    ("GET", "/api/monitoring/config/validate", "cadpipe.v1.MonitoringService.ValidateConfig"),
    ("GET", "/api/monitoring/config/summary", "cadpipe.v1.MonitoringService.GetConfigSummary"),
    (
        "GET",
        "/api/monitoring/projects/{project}/processing-status",
        "cadpipe.v1.MonitoringService.GetProcessingStatus",
    ),
    ("POST", "/api/monitoring/test/s3-upload", "cadpipe.v1.MonitoringService.TestS3Upload"),
    ("GET", "/api/monitoring/metrics", "cadpipe.v1.MonitoringService.GetMetricsSummary"),
    ("GET", "/api/projects", "cadpipe.v1.ScriptService.ListProjects"),
    ("GET", "/api/projects/{project}/report", "cadpipe.v1.ArtifactService.GetReport"),
    ("POST", "/api/projects/{project}/generate", "cadpipe.v1.GenerationService.Generate"),
    (
        "GET",
        "/api/projects/{project}/generations/{id}",
        "cadpipe.v1.GenerationService.GetGeneration",
    ),
    (
        "GET",
        "/api/projects/{project}/generations",
        "cadpipe.v1.GenerationService.ListGenerations",
    ),
    ("GET", "/api/monitoring/ai/metrics", "cadpipe.v1.GenerationService.GetAiMetrics"),
}


def test_the_cadpipe_routes_are_exactly_the_annotated_methods() -> None:
    table = derive_routes_from_modules(default_modules())
    derived = {(r.http_method, r.path.template, r.full_method) for r in table}
    assert derived == CADPIPE_REST
    # and every annotated method of every service in the descriptors has a route
    annotated = {
        m.full_name
        for module in default_modules()
        for s in module.DESCRIPTOR.services_by_name.values()
        for m in s.methods
        if m.GetOptions().HasExtension(annotations_pb2.http)
    }
    assert {r.full_method for r in table} == annotated


def test_a_derived_route_knows_its_grpc_method_and_message_classes() -> None:
    from cadpipe.v1 import scripts_pb2, status_pb2

    table = derive_routes_from_modules(default_modules())
    upload = next(r for r in table if r.method.name == "UploadScript")
    assert upload.grpc_path == "/cadpipe.v1.ScriptService/UploadScript"
    assert upload.service == "cadpipe.v1.ScriptService"
    assert upload.body == "*"
    assert (
        upload.request_class().DESCRIPTOR.full_name
        == scripts_pb2.UploadScriptRequest.DESCRIPTOR.full_name
    )
    assert (
        upload.response_class().DESCRIPTOR.full_name
        == scripts_pb2.UploadScriptResponse.DESCRIPTOR.full_name
    )
    watch = next(r for r in table if r.method.name == "WatchStatus")
    assert watch.server_streaming
    assert (
        watch.response_class().DESCRIPTOR.full_name == status_pb2.ProjectStatus.DESCRIPTOR.full_name
    )
    assert set(table.services()) == {
        "cadpipe.v1.ScriptService",
        "cadpipe.v1.StatusService",
        "cadpipe.v1.ArtifactService",
        "cadpipe.v1.MonitoringService",
        "cadpipe.v1.GenerationService",
    }


def test_query_fields_are_the_scalars_not_bound_by_path_or_body() -> None:
    table = derive_routes_from_modules(default_modules())
    by_name = {r.method.name: r for r in table}
    assert [f.name for f in by_name["ListScripts"].query_fields()] == ["page_size", "page_token"]
    assert [f.name for f in by_name["GetDownloadUrl"].query_fields()] == ["version"]
    assert by_name["GetScript"].query_fields() == ()
    assert by_name["UploadScript"].query_fields() == ()  # body "*" carries everything


def test_path_templates_parse_literals_and_variables() -> None:
    template = PathTemplate.parse("/api/projects/{project}/script/{version=*}")
    assert template.segments == (
        Segment(literal="api"),
        Segment(literal="projects"),
        Segment(field="project"),
        Segment(literal="script"),
        Segment(field="version"),
    )
    assert template.fields == ("project", "version")
    assert template.openapi_path == "/api/projects/{project}/script/{version}"


@pytest.mark.parametrize(
    "template",
    [
        "api/{x}",  # no leading slash
        "/v1/{name=**}",  # multi-segment variable
        "/v1/{name=things/*}",
        "/v1/{inner.x}",  # nested field path
        "/v1/*",
        "/v1/{id}:cancel",  # custom verb
        "/v1/{id}/{id}",  # the same field twice
        "/v1/{id",
    ],
)
def test_unsupported_templates_are_refused_when_the_table_is_built(template: str) -> None:
    with pytest.raises(RouteError):
        PathTemplate.parse(template)


def test_matching_splits_the_raw_path_before_decoding() -> None:
    template = PathTemplate.parse("/api/projects/{project}/scripts")
    assert template.match(split_raw_path("/api/projects/..%2Fx/scripts")) == {"project": b"../x"}
    assert template.match(split_raw_path("/api/projects/a%2Fb/scripts")) == {"project": b"a/b"}
    assert template.match(split_raw_path("/api/projects//scripts")) == {"project": b""}
    assert template.match(split_raw_path("/api/projects/%D0%B0bc/scripts")) == {
        "project": "\u0430bc".encode()  # Cyrillic a
    }
    # a decoded slash in the raw path would be a different path: not this template
    assert template.match(split_raw_path("/api/projects/a/b/scripts")) is None
    assert template.match(split_raw_path("/api/projects/p/scripts/")) is None
    assert template.match(split_raw_path("/api/projects/p/script")) is None
    # literals compare decoded: %73 is 's'
    assert template.match(split_raw_path("/api/projects/p/%73cripts")) == {"project": b"p"}


def test_lookup_answers_404_for_unknown_paths_and_405_with_allow_for_wrong_methods() -> None:
    table = derive_routes_from_modules(default_modules())
    match = table.lookup("GET", "/api/projects/p/script/3")
    assert match.route.method.name == "GetScript"
    assert match.path_params == {"project": b"p", "version": b"3"}

    with pytest.raises(GatewayError) as not_found:
        table.lookup("GET", "/api/projects/p/nothing")
    assert not_found.value.http_status == 404
    assert not_found.value.code == grpc.StatusCode.NOT_FOUND

    with pytest.raises(GatewayError) as wrong_method:
        table.lookup("DELETE", "/api/projects/p/upload-script")
    assert wrong_method.value.http_status == 405
    assert wrong_method.value.headers == {"Allow": "POST"}
    assert "DELETE" in wrong_method.value.message


def test_a_request_is_routed_once_whoever_asks_guard_metrics_or_transcoder() -> None:
    lookups: list[str] = []

    class Counting(RouteTable):
        def lookup(self, http_method: str, raw_path: str) -> Any:
            lookups.append(raw_path)
            return super().lookup(http_method, raw_path)

    table = Counting(list(derive_routes_from_modules(default_modules())))
    scope: dict[str, Any] = {
        "method": "GET",
        "path": "/api/projects/a b/status",
        "raw_path": b"/api/projects/a%20b/status?x=1",
    }
    first, again = route_of(table, scope), route_of(table, scope)
    assert first is again and lookups == ["/api/projects/a%20b/status"]
    assert first.match is not None and first.match.path_params == {"project": b"a b"}
    missing = route_of(table, {"method": "GET", "path": "/api/x y"})  # no raw_path: quoted
    assert missing.raw_path == "/api/x%20y" and missing.match is None
    assert missing.error is not None and missing.error.http_status == 404


def test_literal_segments_win_over_variables_whatever_the_declaration_order() -> None:
    api = make_api(
        [
            Rpc("ById", {"get": "/v/{id}/x"}),
            Rpc("Special", {"get": "/v/special/x"}),
        ]
    )
    table = derive_routes([api])
    assert table.lookup("GET", "/v/special/x").route.method.name == "Special"
    assert table.lookup("GET", "/v/other/x").route.method.name == "ById"


def test_additional_bindings_add_routes_to_the_same_method() -> None:
    api = make_api(
        [
            Rpc(
                "Get",
                {"get": "/v/{id}", "additional_bindings": [{"post": "/v/{id}:x", "body": "*"}]},
            )
        ]
    )
    with pytest.raises(RouteError):  # the second binding uses a custom verb
        derive_routes([api])
    api = make_api(
        [Rpc("Get", {"get": "/v/{id}", "additional_bindings": [{"post": "/w/{id}", "body": "*"}]})]
    )
    table = derive_routes([api])
    assert {(r.http_method, r.path.template) for r in table} == {
        ("GET", "/v/{id}"),
        ("POST", "/w/{id}"),
    }


def test_a_method_without_annotation_has_no_route() -> None:
    api = make_api([Rpc("Internal", None), Rpc("Public", {"get": "/p/{id}"})])
    assert [r.method.name for r in derive_routes([api])] == ["Public"]


@pytest.mark.parametrize(
    ("rpc", "complaint"),
    [
        (Rpc("A", {"get": "/v/{missing}"}), "not a field"),
        (Rpc("A", {"get": "/v/{tags}"}), "singular scalar"),
        (Rpc("A", {"get": "/v/{inner}"}), "singular scalar"),
        (Rpc("A", {"post": "/v", "body": "nope"}), "body field"),
        (Rpc("A", {"post": "/v/{id}", "body": "id"}), "also a path variable"),
        (Rpc("A", {"custom": {"kind": "HEAD", "path": "/v"}}), "custom"),
        (Rpc("A", {"get": "/v", "response_body": "id"}), "response_body"),
        (Rpc("A", {"post": "/v", "body": "*"}, client_streaming=True), "client streaming"),
    ],
)
def test_annotations_the_gateway_cannot_serve_fail_at_start(rpc: Rpc, complaint: str) -> None:
    with pytest.raises(RouteError, match=complaint):
        derive_routes([make_api([rpc])])


def test_two_methods_on_the_same_method_and_path_are_a_conflict() -> None:
    api = make_api([Rpc("A", {"get": "/v/{id}"}), Rpc("B", {"get": "/v/{n}"})])
    with pytest.raises(RouteError, match="two methods"):
        derive_routes([api])
