"""The gateway over HTTP in front of real gRPC servers (fakes that record what they receive)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import grpc
import httpx
from gateway_stack import Stack, start_stack
from openapi_spec_validator import validate as validate_spec
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from cadpipe.grpc_server import NOT_SERVING, SERVING
from cadpipe.v1 import artifacts_pb2, scripts_pb2
from services.gateway.app import FORWARD_METADATA, Gateway, create_app
from services.gateway.backends import Backends
from services.gateway.routes import default_modules, derive_routes_from_modules
from services.gateway.settings import SCRIPT_SERVICE


async def test_json_upload_reaches_the_backend_and_its_answer_comes_back_as_json(gw: Stack) -> None:
    response = await gw.http.post(
        "/api/projects/demo/upload-script",
        json={"project": "not-this-one", "script": "x = 1\n", "metadata": {"by": "llm"}},
        headers={"X-Request-Id": "req-42"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "req-42"
    assert response.json() == {
        "script": {
            "project": "demo",
            "version": 7,
            "key": "input/demo/demo_v7.py",
            "sha256": "",
            "size_bytes": "6",
            "uploaded_at": "2027-01-15T08:00:00Z",
            "content_type": "text/x-python",
            "metadata": {"by": "llm"},
        },
        "replayed": False,
    }
    seen = gw.recorder.last("UploadScript")
    assert seen.request == scripts_pb2.UploadScriptRequest(
        project="demo", script="x = 1\n", metadata={"by": "llm"}
    )
    assert seen.metadata["x-request-id"] == "req-42"


async def test_a_request_id_is_made_when_the_client_sends_none_or_a_bad_one(gw: Stack) -> None:
    first = await gw.http.get("/api/projects/p/scripts")
    second = await gw.http.get("/api/projects/p/scripts", headers={"X-Request-Id": "bad id\t!"})
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert len(set(ids)) == 2
    assert all(len(i) == 32 for i in ids)
    assert [r.metadata["x-request-id"] for r in gw.recorder.received] == ids


async def test_raw_python_upload_with_metadata_headers_and_idempotency_key(gw: Stack) -> None:
    response = await gw.http.post(
        "/api/projects/demo/upload-script",
        content=b"import Part\n",
        headers={
            "Content-Type": "text/x-python",
            "X-Cadpipe-Meta-Author": "me",
            "Idempotency-Key": "key-1",
        },
    )
    assert response.status_code == 200, response.text
    assert gw.recorder.last("UploadScript").request == scripts_pb2.UploadScriptRequest(
        project="demo",
        script_bytes=b"import Part\n",
        metadata={"author": "me"},
        idempotency_key="key-1",
    )


async def test_bad_input_is_refused_before_the_backend_with_400(gw: Stack) -> None:
    cases = [
        ("GET", "/api/projects/p/script/abc", {}, "must be an integer"),
        ("GET", "/api/projects/p/script/1.5", {}, "must be an integer"),
        ("GET", "/api/projects/p/scripts?page_size=ten", {}, "page_size"),
        ("GET", "/api/projects/p/scripts?nope=1", {}, "unknown query parameter"),
        ("GET", "/api/projects/p/scripts?page_token=%FF", {}, "UTF-8"),
        ("GET", "/api/projects/%FF/scripts", {}, "UTF-8"),
        ("POST", "/api/projects/p/upload-script", {"content": b"{nope"}, "not valid JSON"),
        ("POST", "/api/projects/p/upload-script", {"json": {"script": 1}}, "script"),
        ("POST", "/api/projects/p/upload-script", {"json": {"unknown": "x"}}, "unknown"),
        ("POST", "/api/projects/p/upload-script", {"json": ["x"]}, "JSON object"),
    ]
    for method, url, kwargs, complaint in cases:
        response = await gw.http.request(method, url, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 400, (url, response.text)
        body = response.json()
        assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert complaint in body["message"], (url, body)
        assert body["details"] == []
    assert gw.recorder.received == []


async def test_backend_statuses_map_to_http_with_their_details(gw: Stack) -> None:
    missing = await gw.http.get("/api/projects/p/script/9")
    assert missing.status_code == 404
    assert missing.json() == {"code": 5, "message": "version 9 does not exist", "details": []}

    detailed = await gw.http.post("/api/projects/detailed/upload-script", json={"script": "x ="})
    assert detailed.status_code == 400
    assert detailed.json()["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "field_violations": [
                {"field": "script", "description": "line 1 column 5: invalid syntax"}
            ],
        }
    ]

    for code, http in [
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.ABORTED, 409),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.INTERNAL, 500),
    ]:
        gw.recorder.refuse["refused"] = (code, f"because {code.name}")
        response = await gw.http.get("/api/projects/refused/status")
        assert response.status_code == http, code
        assert response.json() == {
            "code": code.value[0],
            "message": f"because {code.name}",
            "details": [],
        }


async def test_path_and_query_values_reach_the_backend_decoded_and_typed(gw: Stack) -> None:
    response = await gw.http.get("/api/projects/..%2Fx/scripts?page_size=2&page_token=abc")
    assert response.status_code == 200
    assert response.json()["next_page_token"] == "next"
    assert gw.recorder.last("ListScripts").request == scripts_pb2.ListScriptsRequest(
        project="../x", page_size=2, page_token="abc"
    )
    await gw.http.get("/api/projects/a%2Fb/download/stl?version=3")
    assert gw.recorder.last("GetDownloadUrl").request == artifacts_pb2.GetDownloadUrlRequest(
        project="a/b", format="stl", version=3
    )
    await gw.http.get("/api/projects/p/logs/p_v1_info_20260101_000000.log")
    assert gw.recorder.last("GetLog").request.name == "p_v1_info_20260101_000000.log"


async def test_every_route_of_the_api_is_served(gw: Stack) -> None:
    for url in [
        "/api/projects/p/scripts",
        "/api/projects/p/script/1",
        "/api/projects/p/status?version=2",
        "/api/projects/p/outputs",
        "/api/projects/p/download/step",
        "/api/projects/p/logs?version=1",
        "/api/projects/p/logs/x.log",
    ]:
        response = await gw.http.get(url)
        assert response.status_code == 200, (url, response.text)
    outputs = (await gw.http.get("/api/projects/p/outputs")).json()
    assert outputs["outputs"][0]["size_bytes"] == str(2**40)  # int64 as a string, as proto3 JSON
    assert {r.method for r in gw.recorder.received} == {
        "ListScripts",
        "GetScript",
        "GetStatus",
        "ListOutputs",
        "GetDownloadUrl",
        "ListLogs",
        "GetLog",
    }


async def test_unknown_routes_and_wrong_methods_get_json_errors(gw: Stack) -> None:
    unknown = await gw.http.get("/api/nothing/here")
    assert unknown.status_code == 404
    assert unknown.json() == {
        "code": 5,
        "message": "no route for GET /api/nothing/here",
        "details": [],
    }

    wrong = await gw.http.put("/api/projects/p/scripts", content=b"{}")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET"
    assert wrong.json()["code"] == grpc.StatusCode.UNIMPLEMENTED.value[0]

    options = await gw.http.options("/api/projects/p/scripts")
    assert options.status_code == 405
    assert options.json()["code"] == grpc.StatusCode.UNIMPLEMENTED.value[0]

    unsupported = await gw.http.post(
        "/api/projects/p/upload-script", content=b"x", headers={"Content-Type": "image/png"}
    )
    assert unsupported.status_code == 415
    assert gw.recorder.received == []


async def test_a_body_over_the_limit_is_413_whether_declared_or_streamed() -> None:
    async with AsyncExitStack() as stack:
        gw = await start_stack(stack, max_body_bytes=1000)
        declared = await gw.http.post(
            "/api/projects/p/upload-script",
            content=b"x" * 1001,
            headers={"Content-Type": "text/x-python"},
        )
        assert declared.status_code == 413
        assert declared.json()["code"] == 3
        assert "1000 bytes" in declared.json()["message"]

        async def chunks() -> AsyncIterator[bytes]:  # chunked: no Content-Length to trust
            for _ in range(20):
                yield b"y" * 100

        streamed = await gw.http.post(
            "/api/projects/p/upload-script",
            content=chunks(),
            headers={"Content-Type": "text/x-python"},
        )
        assert streamed.status_code == 413
        exact = await gw.http.post(
            "/api/projects/p/upload-script",
            content=b"x" * 1000,
            headers={"Content-Type": "text/x-python"},
        )
        assert exact.status_code == 200
        assert gw.recorder.calls("UploadScript") == 1


async def test_a_backend_slower_than_the_deadline_is_504() -> None:
    async with AsyncExitStack() as stack:
        gw = await start_stack(stack, grpc_deadline_seconds=0.3)
        response = await gw.http.get("/api/projects/p/logs/slow.log")
        assert response.status_code == 504
        assert response.json()["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


async def test_a_backend_that_is_down_is_503_and_readyz_says_which(gw: Stack) -> None:
    ready = await gw.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert {b["service"]: b["status"] for b in ready.json()["backends"]} == {
        "cadpipe.v1.ScriptService": "SERVING",
        "cadpipe.v1.StatusService": "SERVING",
        "cadpipe.v1.ArtifactService": "SERVING",
        "cadpipe.v1.MonitoringService": "SERVING",
    }

    await gw.scripts.shutdown(0)
    down = await gw.http.get("/api/projects/p/scripts")
    assert down.status_code == 503
    assert down.json()["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    # the other backend still answers
    assert (await gw.http.get("/api/projects/p/status")).status_code == 200

    not_ready = await gw.http.get("/readyz")
    assert not_ready.status_code == 503
    backends = {b["service"]: b for b in not_ready.json()["backends"]}
    assert backends["cadpipe.v1.ScriptService"]["status"] == "UNAVAILABLE"
    assert backends["cadpipe.v1.ScriptService"]["address"] == gw.settings.scripts_addr
    assert backends["cadpipe.v1.StatusService"]["status"] == "SERVING"
    assert (await gw.http.get("/healthz")).status_code == 200  # alive all the same


async def test_readyz_follows_the_backends_health_service(gw: Stack) -> None:
    await gw.scripts.health.set(SCRIPT_SERVICE, NOT_SERVING)
    response = await gw.http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "not_ready"
    assert {b["service"]: b["status"] for b in response.json()["backends"]}[
        SCRIPT_SERVICE
    ] == "NOT_SERVING"

    await gw.scripts.health.set(SCRIPT_SERVICE, SERVING)
    assert (await gw.http.get("/readyz")).status_code == 200


async def test_a_backend_left_unconfigured_is_503_and_not_waited_for() -> None:
    async with AsyncExitStack() as stack:
        gw = await start_stack(stack, watcher_addr="")
        response = await gw.http.get("/api/projects/p/status")
        assert response.status_code == 503
        assert "cadpipe.v1.StatusService" in response.json()["message"]
        ready = await gw.http.get("/readyz")
        assert ready.status_code == 200
        assert [b["service"] for b in ready.json()["backends"]] == [SCRIPT_SERVICE]


async def test_openapi_and_docs_are_served(gw: Stack) -> None:
    document = (await gw.http.get("/openapi.json")).json()
    validate_spec(document)
    assert "/api/projects/{project}/upload-script" in document["paths"]
    docs = await gw.http.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in docs.text
    assert "openapi.json" in docs.text


async def test_many_concurrent_requests_share_the_channels(gw: Stack) -> None:
    responses = await asyncio.gather(
        *(gw.http.get(f"/api/projects/p{i}/status") for i in range(50))
    )
    assert [r.status_code for r in responses] == [200] * 50
    assert sorted(r.json()["project"] for r in responses) == sorted(f"p{i}" for i in range(50))


async def test_the_port_is_free_again_after_exit() -> None:
    async with AsyncExitStack() as stack:
        gw = await start_stack(stack)
        port = gw.gateway.port
        assert (await gw.http.get("/healthz")).status_code == 200
    async with httpx.AsyncClient() as client:
        try:
            await client.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        except httpx.ConnectError:
            pass
        else:
            raise AssertionError("the gateway still answers after its context exited")


async def test_cors_lets_a_configured_browser_origin_in() -> None:
    async with AsyncExitStack() as stack:
        gw = await start_stack(
            stack, cors_allow_origins="http://app.example, http://localhost:5173"
        )
        preflight = await gw.http.options(
            "/api/projects/p/upload-script",
            headers={
                "Origin": "http://localhost:5173",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,idempotency-key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
        simple = await gw.http.get(
            "/api/projects/p/status", headers={"Origin": "http://app.example"}
        )
        assert simple.headers["access-control-allow-origin"] == "http://app.example"
        assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
        other = await gw.http.get(
            "/api/projects/p/status", headers={"Origin": "http://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers


class StampIdentity:
    """What an authentication middleware will do through the seam: refuse, or tell the
    backends who calls (scope state `grpc_metadata`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if dict(scope["headers"]).get(b"authorization") != b"Bearer good":
                refusal = JSONResponse(
                    {"code": 16, "message": "no valid token", "details": []}, 401
                )
                await refusal(scope, receive, send)
                return
            scope.setdefault("state", {})[FORWARD_METADATA] = [("x-cadpipe-identity", "alice")]
        await self.app(scope, receive, send)


async def test_a_middleware_can_refuse_or_forward_the_callers_identity(gw: Stack) -> None:
    backends = Backends(gw.settings.backend_addresses())
    try:
        gateway = Gateway(table=derive_routes_from_modules(default_modules()), backends=backends)
        app = create_app(gateway, middleware=[Middleware(StampIdentity)])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            refused = await client.get("/api/projects/p/status")
            assert refused.status_code == 401
            assert refused.headers["x-request-id"]  # the request id wraps every response
            assert gw.recorder.received == []
            allowed = await client.get(
                "/api/projects/p/status", headers={"Authorization": "Bearer good"}
            )
            assert allowed.status_code == 200
        seen = gw.recorder.last("GetStatus").metadata
        assert seen["x-cadpipe-identity"] == "alice"
        assert seen["x-request-id"] == allowed.headers["x-request-id"]
    finally:
        await backends.close()
