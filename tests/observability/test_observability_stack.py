"""The running system as an operator sees it: metrics scraped over HTTP from every service after
real traffic, request ids in every service's logs, the monitoring routes through REST, gRPC
health and reflection, and what a dependency outage looks like."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from obs_harness import STL_SCRIPT, Observed, Records, scrape, total
from support.polling import wait_until

from cadpipe import layout

pytestmark = [pytest.mark.freecad, pytest.mark.timeout(90)]

TERMINAL = ("completed", "error", "timeout")


async def upload_and_wait(
    client: httpx.AsyncClient, project: str, *, request_id: str = "", state: str = "completed"
) -> dict[str, Any]:
    headers = {"X-Request-Id": request_id} if request_id else {}
    response = await client.post(
        f"/api/projects/{project}/upload-script", json={"script": STL_SCRIPT}, headers=headers
    )
    assert response.status_code == 200, response.text
    status: dict[str, Any] = {}

    async def finished() -> bool:
        nonlocal status
        status = (await client.get(f"/api/projects/{project}/status")).json()
        return status.get("state") in TERMINAL

    await wait_until(finished, within=30, what=f"{project} finished")
    assert status["state"] == state, status
    return status


async def test_traffic_shows_in_every_services_metrics_and_logs_carry_its_request_id(
    observed: Observed, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="cadpipe.grpc_observe")
    records = Records()
    logging.getLogger().addHandler(records)
    project, request_id = f"obs-{unique}", f"req-{unique}"
    try:
        async with observed.user() as client:
            await upload_and_wait(client, project, request_id=request_id)
            missing = await client.get(f"/api/projects/{project}/script/9")
            assert missing.status_code == 404
    finally:
        logging.getLogger().removeHandler(records)

    gateway = await scrape(observed.metrics["gateway"])
    upload_route = {"method": "POST", "route": "/api/projects/{project}/upload-script"}
    assert total(gateway, "http_requests_total", **upload_route, status="200") == 1
    script_route = "/api/projects/{project}/script/{version}"
    assert total(gateway, "http_requests_total", route=script_route, status="404") == 1
    assert total(gateway, "http_request_duration_seconds_count", **upload_route) == 1
    # no raw path ever becomes a label: the series stay bounded whatever clients send
    assert not any(project in value for (_, labels) in gateway for _, value in labels), (
        "a project name leaked into a label"
    )

    scripts = await scrape(observed.metrics["scripts"])
    assert (
        total(scripts, "grpc_server_handled_total", grpc_method="UploadScript", grpc_code="OK") == 1
    )
    assert (
        total(scripts, "grpc_server_handled_total", grpc_method="GetScript", grpc_code="NOT_FOUND")
        == 1
    )
    assert total(scripts, "cadpipe_s3_requests_total", operation="PutObject", status="200") >= 1
    assert total(scripts, "cadpipe_scripts_version_conflicts_total") == 0
    assert total(scripts, "cadpipe_dependency_errors_total") == 0

    async def events_and_decision_counted() -> bool:
        scripts_now = await scrape(observed.metrics["scripts"])
        watcher_now = await scrape(observed.metrics["watcher"])
        return (
            total(scripts_now, "cadpipe_scripts_events_published_total") == 1
            and total(watcher_now, "cadpipe_watcher_events_published_total") == 1
        )

    await wait_until(events_and_decision_counted, what="event and completion counted")
    watcher = await scrape(observed.metrics["watcher"])
    assert total(watcher, "cadpipe_watcher_decisions_total", outcome="completed") == 1
    assert total(watcher, "cadpipe_watcher_detection_seconds_count") == 1
    assert total(watcher, "cadpipe_watcher_job_duration_seconds_count", outcome="completed") == 1
    assert total(watcher, "grpc_server_handled_total", grpc_method="GetStatus", grpc_code="OK") >= 1

    worker = await scrape(observed.metrics["worker"])
    assert total(worker, "cadpipe_worker_jobs_total", outcome="completed", reason="ok") == 1
    assert total(worker, "cadpipe_worker_job_duration_seconds_count", outcome="completed") == 1
    assert total(worker, "cadpipe_worker_redeliveries_total") == 0
    assert total(worker, "cadpipe_worker_jobs_waiting") == 0
    assert total(worker, "cadpipe_worker_intake_paused") == 0
    assert total(worker, "cadpipe_s3_requests_total", operation="GetObject", status="200") >= 1

    for name, samples in (
        ("gateway", gateway),
        ("scripts", scripts),
        ("watcher", watcher),
        ("worker", worker),
    ):
        assert total(samples, "process_cpu_seconds_total") > 0, name
        assert total(samples, "cadpipe_service_info", service=name) == 1

    # one request id from the client's header through the gateway, the script service, the
    # uploaded event's header, to the watcher's and the worker's lines about that version
    loggers = {r.name for r in records.with_field("request_id", request_id)}
    assert "services.gateway.app" in loggers, loggers
    assert any(
        r.name == "cadpipe.grpc_observe" and getattr(r, "rpc", "").endswith("UploadScript")
        for r in records.with_field("request_id", request_id)
    ), loggers
    assert any(n.startswith("services.watcher") for n in loggers), loggers
    assert any(n.startswith("services.worker") for n in loggers), loggers
    worker_lines = [
        r
        for r in records.with_field("request_id", request_id)
        if r.name.startswith("services.worker")
    ]
    assert all(getattr(r, "project", None) == project for r in worker_lines)
    assert all(getattr(r, "version", None) == 1 for r in worker_lines)


async def test_the_monitoring_routes_answer_from_real_checks(
    observed: Observed, unique: str
) -> None:
    project = f"mon-{unique}"
    async with observed.user() as client:
        await upload_and_wait(client, project)
    # version 2 is in S3 but no watcher ever heard of it (its event never went out)
    observed.bucket.put(
        layout.script_key(project, 2), b"x = 2\n", content_type=layout.SCRIPT_CONTENT_TYPE
    )

    async with observed.api() as anonymous:
        health = await anonymous.get("/api/monitoring/health")  # public, for load balancers
    assert health.status_code == 200, health.text
    report = health.json()
    checks = {c["name"]: c for c in report["checks"]}
    assert report["status"] == "ok"
    assert {"s3", "mongodb", "nats", "script service"} <= set(checks)
    assert all(c["status"] == "ok" for c in checks.values()), checks
    assert checks["script service"]["detail"].endswith("SERVING")
    assert all(c["latency_ms"] > 0 for c in checks.values())

    async with observed.user() as user:
        refused = await user.get("/api/monitoring/config/summary")
    assert refused.status_code == 403

    async with observed.admin() as admin:
        s3_status = (await admin.get("/api/monitoring/s3/status")).json()
        assert s3_status["reachable"] and s3_status["bucket"] == observed.bucket.name
        prefixes = {p["prefix"]: p for p in s3_status["prefixes"]}
        assert set(prefixes) == set(layout.PREFIXES)
        # int64 fields are JSON strings (proto3 JSON)
        assert int(prefixes["input/"]["objects"]) == 2 and not prefixes["input/"]["truncated"]
        assert int(prefixes["processed/"]["objects"]) == 1
        assert int(prefixes["output/"]["objects"]) >= 1 and int(prefixes["output/"]["bytes"]) > 0

        validation = (await admin.get("/api/monitoring/config/validate")).json()
        assert validation["valid"], validation
        names = {c["name"] for c in validation["checks"]}
        assert {"s3 bucket", "mongodb jobs indexes", "stream CADPIPE_SCRIPTS"} <= names

        summary = await admin.get("/api/monitoring/config/summary")
        entries = {e["name"]: e for e in summary.json()["settings"]}
        assert entries["AWS_SECRET_ACCESS_KEY"] == {
            "name": "AWS_SECRET_ACCESS_KEY",
            "value": "set",
            "secret": True,
            "from_environment": True,
        }
        assert entries["MONGODB_URI"]["value"] == "set"
        assert entries["SERVICE_TOKEN"]["value"] == "set"
        assert entries["S3_BUCKET"]["value"] == observed.bucket.name
        assert entries["WATCHER_JOB_TIMEOUT_SECONDS"]["from_environment"] is False
        secret = observed.s3_settings.aws_secret_access_key
        assert secret is not None and secret.get_secret_value() not in summary.text
        assert observed.mongodb_uri not in summary.text

        processing = (
            await admin.get(f"/api/monitoring/projects/{project}/processing-status")
        ).json()
        assert [(v["version"], v["state"]) for v in processing["versions"]] == [
            (1, "completed"),
            (2, "untracked"),
        ]
        first = processing["versions"][0]
        assert first["uploaded_at"] and first["finished_at"] and first["detected_at"]
        finished = dt.datetime.fromisoformat(first["finished_at"].replace("Z", "+00:00"))
        detected = dt.datetime.fromisoformat(first["detected_at"].replace("Z", "+00:00"))
        uploaded = dt.datetime.fromisoformat(first["uploaded_at"].replace("Z", "+00:00"))
        # from the worker's finish to the watcher's decision, and from the upload to the finish
        assert first["detection_latency_seconds"] == pytest.approx(
            (detected - finished).total_seconds(), abs=1e-3
        )
        assert first["duration_seconds"] == pytest.approx(
            (finished - uploaded).total_seconds(), abs=1e-3
        )
        assert 0 < first["duration_seconds"] < 60
        assert first["formats"] == ["stl"]
        assert processing["counts"] == {"completed": 1, "untracked": 1}
        missing = await admin.get(f"/api/monitoring/projects/none-{unique}/processing-status")
        assert missing.status_code == 404
        malformed = await admin.get("/api/monitoring/projects/a.b/processing-status")
        assert malformed.status_code == 400

        trip = await admin.post("/api/monitoring/test/s3-upload", json={"size_bytes": 2048})
        assert trip.status_code == 200, trip.text
        result = trip.json()
        assert result["ok"] and result["cleaned_up"] and result["size_bytes"] == 2048
        assert [s["name"] for s in result["steps"]] == [
            "put",
            "conditional put refused",
            "head",
            "get and compare",
            "delete",
            "gone",
        ]
        assert not result["key"].startswith(layout.PREFIXES)
        assert observed.bucket.head(result["key"]) is None
        too_big = await admin.post("/api/monitoring/test/s3-upload", json={"size_bytes": 2 << 20})
        assert too_big.status_code == 400

        metrics = (await admin.get("/api/monitoring/metrics?window_seconds=3600")).json()
        assert int(metrics["uploads"]) == 1
        assert int(metrics["jobs_by_state"]["completed"]) == 1
        assert int(metrics["pending"]) == 0
        assert metrics["detection_latency"]["samples"] == 1
        latency = metrics["detection_latency"]
        assert 0 <= latency["p50_seconds"] <= latency["p95_seconds"] <= latency["max_seconds"]
        assert metrics["job_duration"]["p50_seconds"] > 0
        assert int(metrics["worker_queue"]) == 0 and int(metrics["completion_events"]) == 1

        ready = (await admin.get("/readyz")).json()
        assert {b["service"]: b["status"] for b in ready["backends"]}[
            "cadpipe.v1.MonitoringService"
        ] == "SERVING"


async def _list_services(port: int) -> set[str]:
    """What `grpcurl -plaintext 127.0.0.1:port list` asks: ServerReflectionInfo list_services."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        async for reply in call:
            return {s.name for s in reply.list_services_response.service}
    raise AssertionError("no reflection answer")


async def _describe(port: int, symbol: str) -> list[bytes]:
    """What `grpcurl describe SYMBOL` asks: the file declaring it."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)])
        )
        async for reply in call:
            return list(reply.file_descriptor_response.file_descriptor_proto)
    raise AssertionError("no reflection answer")


async def _health(port: int, service: str = "") -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def test_every_grpc_service_serves_health_and_reflection(observed: Observed) -> None:
    common = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
    expected = {
        observed.stack.scripts_port: {"cadpipe.v1.ScriptService"},
        observed.stack.watcher_port: {
            "cadpipe.v1.StatusService",
            "cadpipe.v1.ArtifactService",
            "cadpipe.v1.MonitoringService",
        },
        observed.stack.worker_port: set(),
    }
    for port, services in expected.items():
        assert await _list_services(port) == services | common
        assert await _health(port) == "SERVING"
        assert await _health(port, "liveness") == "SERVING"
        for service in services:
            assert await _health(port, service) == "SERVING"
    files = {
        f.name: f
        for f in map(
            descriptor_pb2.FileDescriptorProto.FromString,
            await _describe(observed.stack.watcher_port, "cadpipe.v1.MonitoringService"),
        )
    }
    # the declaring file and what it imports, as grpcurl needs to describe and call it
    assert {"cadpipe/v1/monitoring.proto", "google/api/annotations.proto"} <= set(files)
    methods = {m.name for m in files["cadpipe/v1/monitoring.proto"].service[0].method}
    assert {"GetHealth", "TestS3Upload", "GetMetricsSummary"} <= methods

    async with observed.api() as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_nats_down_makes_health_503_and_the_services_unready_until_it_is_back(
    observed: Observed,
) -> None:
    observed.nats.stop()
    try:
        async with observed.api() as client:
            response: httpx.Response | None = None

            async def degraded() -> bool:
                nonlocal response
                response = await client.get("/api/monitoring/health")
                return response.status_code == 503

            await wait_until(degraded, what="health 503 without NATS")
            assert response is not None
            body = response.json()
            assert body["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
            assert "nats" in body["message"]
            [report] = body["details"]
            assert report["@type"] == "type.googleapis.com/cadpipe.v1.HealthReport"
            assert report["status"] == "degraded"
            checks = {c["name"]: c for c in report["checks"]}
            assert checks["nats"]["status"] == "failed"
            assert checks["s3"]["status"] == "ok" and checks["mongodb"]["status"] == "ok"

            async def unready() -> bool:
                return (
                    await _health(observed.stack.worker_port) == "NOT_SERVING"
                    and await _health(observed.stack.watcher_port) == "NOT_SERVING"
                )

            await wait_until(unready, what="worker and watcher NOT_SERVING without NATS")
            # alive all the same: Kubernetes must not restart them for an outage elsewhere
            assert await _health(observed.stack.worker_port, "liveness") == "SERVING"
            assert (await client.get("/readyz")).status_code == 503
            assert (await client.get("/healthz")).status_code == 200
    finally:
        observed.nats.start()

    async with observed.api() as client:

        async def healthy() -> bool:
            return (await client.get("/api/monitoring/health")).status_code == 200

        await wait_until(healthy, within=20, what="health 200 once NATS is back")

    async def worker_ready() -> bool:
        return await _health(observed.stack.worker_port) == "SERVING"

    # its own readiness check, every 0.2 s, sees NATS again
    await wait_until(worker_ready, what="the worker SERVING once NATS is back")


async def test_every_service_stops_cleanly_while_nats_is_down(
    bucket: Any, s3_settings: Any, mongo_settings: Any, nats_server: Any
) -> None:
    """A node drain can take NATS and a service down together: the service's shutdown then
    finds NATS gone, and must still close everything and end without an error."""
    from services.allinone import stack

    backends = stack.Backends(
        s3=s3_settings.model_dump(),
        nats_url=nats_server.url,
        mongodb_uri=mongo_settings.mongodb_uri.get_secret_value(),
        mongodb_database=mongo_settings.mongodb_database,
    )
    fast = {"shutdown_grace_seconds": 0.5}
    overrides = stack.Overrides(scripts=fast, watcher=fast, worker=fast, gateway=fast)
    async with stack.start(backends, overrides=overrides):
        nats_server.stop()
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 10  # no service waits for NATS to come back
