"""The shared observability pieces on their own: log context, settings loading and summaries,
the monitoring use cases with hand-written fakes, the gRPC interceptor and health servicer on a
real server, and the S3/MongoDB failure counters against real clients."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import pymongo
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings
from support.metrics import sample_value

from cadpipe import errors, logs, messaging, started
from cadpipe.adapters import s3
from cadpipe.devstack import free_port
from cadpipe.grpc_observe import GrpcServerMetrics, ObservingInterceptor
from cadpipe.grpc_server import NOT_SERVING, SERVING, GrpcServer
from cadpipe.metrics import ServiceMetrics
from cadpipe.settings import (
    EX_CONFIG,
    MODEL_CONFIG,
    S3Settings,
    configuration_problems,
    load_settings,
    summarize,
)
from cadpipe.v1 import status_pb2
from services.gateway.metrics import UNMATCHED, HttpMetrics, HttpMetricsMiddleware
from services.gateway.routes import default_modules, derive_routes_from_modules
from services.watcher import domain
from services.watcher.domain import Job
from services.watcher.monitoring.ports import ConsumerState, MonitoringConfig, StreamState
from services.watcher.monitoring.reports import (
    DEGRADED,
    FAILED,
    OK,
    UNTRACKED,
    WARNING,
    percentile,
    redact_url,
)
from services.watcher.monitoring.use_cases import SCRATCH_PREFIX, Monitoring

# --- logs ----------------------------------------------------------------------------------


def _json_lines(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    formatter = logs.JsonFormatter("test")
    return [json.loads(formatter.format(r)) for r in records]


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.addFilter(logs.ContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Any:
    logger = logging.getLogger("obs-unit")
    handler = _Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, handler
    logger.removeHandler(handler)


async def test_log_context_fields_reach_every_line_inside_it_and_threads(kept: Any) -> None:
    logger, handler = kept
    with logs.log_context(request_id="r-1", project="p", version=None):
        logger.info("outer")
        with logs.log_context(version=3):
            logger.info("inner")
            await asyncio.to_thread(logger.info, "in a thread")
        logger.info("outer again", extra={"project": "explicit"})
    logger.info("outside")
    lines = _json_lines(handler.records)
    assert [(x.get("request_id"), x.get("project"), x.get("version")) for x in lines] == [
        ("r-1", "p", None),
        ("r-1", "p", 3),
        ("r-1", "p", 3),
        ("r-1", "explicit", None),  # a field given with extra= wins
        (None, None, None),
    ]
    assert logs.current_log_context() == {}


async def test_log_context_is_per_task() -> None:
    seen: dict[str, str] = {}

    async def task(name: str) -> None:
        with logs.log_context(request_id=name):
            await asyncio.sleep(0.01)
            seen[name] = logs.current_request_id()

    await asyncio.gather(task("a"), task("b"))
    assert seen == {"a": "a", "b": "b"}


# --- settings ------------------------------------------------------------------------------


class _Settings(BaseSettings):
    model_config = MODEL_CONFIG

    needed_bucket: str
    some_port: int = Field(default=1, ge=0, le=65535)
    api_password: SecretStr | None = Field(default=None, min_length=8)
    endpoint_url: str = "http://user:hunter2@minio:9000"
    names: list[str] = Field(default_factory=lambda: ["a", "b"])


def test_problems_name_each_variable_and_never_repeat_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NEEDED_BUCKET", raising=False)
    monkeypatch.setenv("SOME_PORT", "70000")
    monkeypatch.setenv("API_PASSWORD", "short")
    with pytest.raises(Exception) as caught:
        _Settings()  # type: ignore[call-arg]  # from the environment
    problems = configuration_problems(caught.value)  # type: ignore[arg-type]
    assert problems[0] == "NEEDED_BUCKET: required, but not set"
    assert problems[1].startswith("SOME_PORT: Input should be less than or equal to 65535")
    assert problems[1].endswith("(got '70000')")
    assert problems[2].startswith("API_PASSWORD: ") and "short" not in problems[2]


def test_load_settings_exits_with_ex_config_and_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEEDED_BUCKET", raising=False)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("svc"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with pytest.raises(SystemExit) as exit_:
            load_settings(_Settings, "svc")
    finally:
        root.removeHandler(handler)
    assert exit_.value.code == EX_CONFIG
    [line] = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert line["problems"] == ["NEEDED_BUCKET: required, but not set"]
    assert line["message"] == (
        "svc cannot start, invalid configuration: NEEDED_BUCKET: required, but not set"
    )


def test_a_summary_shows_secrets_as_set_or_unset_and_urls_without_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEEDED_BUCKET", "b")
    monkeypatch.setenv("API_PASSWORD", "a-long-password")
    monkeypatch.delenv("SOME_PORT", raising=False)
    entries = {e.name: e for e in summarize(_Settings())}  # type: ignore[call-arg]
    assert entries["API_PASSWORD"].value == "set" and entries["API_PASSWORD"].secret
    assert entries["ENDPOINT_URL"].value == "http://***@minio:9000"
    assert entries["NAMES"].value == "a,b"
    assert entries["NEEDED_BUCKET"].from_environment
    assert not entries["SOME_PORT"].from_environment
    unset = {e.name: e for e in summarize(S3Settings(s3_bucket="bbb"))}
    assert unset["AWS_SECRET_ACCESS_KEY"].value == "unset"
    assert redact_url("https://k:s@s3.example.com:8443/x") == "https://s3.example.com:8443/x"


# --- the monitoring use cases, with fakes ----------------------------------------------------


@dataclass
class FakeBucket:
    objects: dict[str, bytes] = field(default_factory=dict)
    honours_if_none_match: bool = True
    corrupts_reads: bool = False
    down: bool = False
    hangs: bool = False
    calls: list[str] = field(default_factory=list)

    async def ping(self) -> None:
        self.calls.append("ping")
        if self.hangs:
            await asyncio.sleep(60)
        if self.down:
            raise ConnectionError("connection refused")

    async def count(self, prefix: str, limit: int) -> tuple[int, int, bool]:
        keys = sorted(k for k in self.objects if k.startswith(prefix))
        return (
            min(len(keys), limit),
            sum(len(self.objects[k]) for k in keys[:limit]),
            len(keys) > limit,
        )

    async def script_versions(self, project: str, limit: int) -> tuple[set[int], bool]:
        prefix = f"input/{project}/{project}_v"
        return {int(k[len(prefix) : -3]) for k in self.objects if k.startswith(prefix)}, False

    async def put_if_absent(self, key: str, body: bytes) -> bool:
        self.calls.append(f"put {key}")
        if key in self.objects and self.honours_if_none_match:
            return False
        self.objects[key] = body
        return True

    async def head(self, key: str) -> int | None:
        return len(self.objects[key]) if key in self.objects else None

    async def get(self, key: str) -> bytes | None:
        body = self.objects.get(key)
        return body[::-1] if body is not None and self.corrupts_reads else body

    async def delete(self, key: str) -> None:
        self.calls.append(f"delete {key}")
        self.objects.pop(key, None)


NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def job(version: int, state: str = "completed", *, took: float = 2.0, seen: float = 0.1) -> Job:
    uploaded = NOW - dt.timedelta(seconds=60 - version)
    if state == domain.QUEUED:
        return domain.new_job("p", version, uploaded_at=uploaded)
    if state == domain.PROCESSING:
        queued = domain.new_job("p", version, uploaded_at=uploaded)
        at = uploaded + dt.timedelta(seconds=3)
        return domain.start(queued, started.started(at, worker="w/1", attempt=1))
    finished = uploaded + dt.timedelta(seconds=took)
    return Job(
        project="p",
        version=version,
        state=state,  # type: ignore[arg-type]
        uploaded_at=uploaded,
        finished_at=finished,
        detected_at=finished + dt.timedelta(seconds=seen),
        duration_seconds=took,
        event_published=True,
    )


@dataclass
class FakeJobs:
    jobs: list[Job] = field(default_factory=list)
    indexes: list[str] = field(default_factory=lambda: ["_id_", "project_version"])

    async def ping(self) -> None:
        pass

    async def for_project(self, project: str, limit: int) -> tuple[list[Job], bool]:
        mine = sorted((j for j in self.jobs if j.project == project), key=lambda j: -j.version)
        return mine[:limit], len(mine) > limit

    async def counts(self, since: dt.datetime | None) -> dict[str, int]:
        counted: dict[str, int] = {}
        for j in self.jobs:
            if since is None or j.uploaded_at >= since:
                counted[j.state] = counted.get(j.state, 0) + 1
        return counted

    async def unpublished(self, since: dt.datetime | None) -> int:
        return sum(1 for j in self.jobs if j.terminal and not j.event_published)

    async def recent_decided(self, since: dt.datetime | None, limit: int) -> list[Job]:
        return [j for j in self.jobs if j.terminal][:limit]

    async def index_names(self) -> list[str]:
        return self.indexes


@dataclass
class FakeStreams:
    down: bool = False
    window: float = messaging.DUPLICATE_WINDOW_SECONDS
    workers: ConsumerState | None = field(
        default_factory=lambda: ConsumerState(3, 1, 1, ack_wait_seconds=30, max_deliver=3)
    )

    async def ping(self) -> None:
        if self.down:
            raise ConnectionError("NATS is not connected")

    async def stream(self, name: str) -> StreamState | None:
        await self.ping()
        subjects = {
            messaging.SCRIPTS_STREAM: messaging.UPLOADED_SUBJECTS,
            messaging.JOBS_STREAM: messaging.JOB_SUBJECTS,
        }
        return StreamState((subjects[name],), 7, self.window)

    async def consumer(self, stream: str, durable: str) -> ConsumerState | None:
        await self.ping()
        if durable == "cadpipe-worker":
            return self.workers
        return ConsumerState(0, 0, 1, ack_wait_seconds=30, max_deliver=-1)


def monitoring(
    bucket: FakeBucket | None = None,
    jobs: FakeJobs | None = None,
    streams: FakeStreams | None = None,
    scripts: str | None = "SERVING",
    **config: Any,
) -> Monitoring:
    async def scripts_health() -> str:
        assert scripts is not None
        return scripts

    values: dict[str, Any] = {
        "bucket": "b",
        "s3_endpoint": None,
        "s3_presign_endpoint": None,
        "watcher_consumer": "cadpipe-watcher",
        "worker_consumer": "cadpipe-worker",
        "job_timeout_seconds": 600,
        "check_timeout_seconds": 0.2,
        "scripts_addr": "scripts:50051",
        "served_by": "watcher-0",
        **config,
    }
    return Monitoring(
        s3=bucket or FakeBucket(),
        jobs=jobs or FakeJobs(),
        streams=streams or FakeStreams(),
        config=MonitoringConfig(**values),
        scripts_health=scripts_health if scripts is not None else None,
        clock=lambda: NOW,
    )


async def test_health_is_ok_when_every_required_check_passes() -> None:
    report = await monitoring().health()
    assert report.status == OK and report.served_by == "watcher-0"
    assert {c.name: c.status for c in report.checks} == {
        "s3": OK,
        "mongodb": OK,
        "nats": OK,
        "stream CADPIPE_SCRIPTS": OK,
        "stream CADPIPE_JOBS": OK,
        "watcher consumer cadpipe-watcher": OK,
        "workers (cadpipe-worker)": OK,
        "script service": OK,
    }


async def test_health_is_degraded_by_a_required_check_and_not_by_a_warning() -> None:
    no_workers = FakeStreams(workers=None)
    report = await monitoring(streams=no_workers).health()
    assert report.status == OK
    workers = next(c for c in report.checks if c.name.startswith("workers"))
    assert workers.status == WARNING and not workers.required

    report = await monitoring(streams=FakeStreams(down=True), scripts="NOT_SERVING").health()
    assert report.status == DEGRADED
    failed = {c.name for c in report.checks if c.status == FAILED}
    assert {"nats", "stream CADPIPE_SCRIPTS", "script service"} <= failed
    scripts = next(c for c in report.checks if c.name == "script service")
    assert scripts.detail.endswith("scripts:50051 answers NOT_SERVING")


async def test_a_hung_dependency_is_a_failed_check_within_the_timeout() -> None:
    started = time.monotonic()
    report = await monitoring(FakeBucket(hangs=True)).health()
    assert time.monotonic() - started < 2
    s3_check = next(c for c in report.checks if c.name == "s3")
    assert (s3_check.status, s3_check.detail) == (FAILED, "no answer within 0.2 s")
    assert report.status == DEGRADED


async def test_the_round_trip_passes_and_leaves_nothing_behind() -> None:
    bucket = FakeBucket()
    trip = await monitoring(bucket).s3_round_trip(0)
    assert trip.ok and trip.cleaned_up and trip.size_bytes == 1024
    assert trip.key.startswith(SCRATCH_PREFIX + "watcher-0-")
    assert [s.status for s in trip.steps] == [OK] * 6
    assert bucket.objects == {}


async def test_a_store_that_ignores_if_none_match_fails_the_round_trip_and_is_cleaned() -> None:
    bucket = FakeBucket(honours_if_none_match=False)
    trip = await monitoring(bucket).s3_round_trip(10)
    assert not trip.ok and trip.cleaned_up
    failed = next(s for s in trip.steps if s.status != OK)
    assert failed.name == "conditional put refused"
    assert "two uploads could get the same version" in failed.detail
    assert trip.steps[-1].name == "cleanup" and bucket.objects == {}


async def test_a_store_that_returns_other_bytes_fails_at_the_comparison() -> None:
    bucket = FakeBucket(corrupts_reads=True)
    trip = await monitoring(bucket).s3_round_trip(64)
    failed = next(s for s in trip.steps if s.status != OK)
    assert failed.name == "get and compare" and "differ" in failed.detail
    assert trip.cleaned_up and bucket.objects == {}


async def test_a_round_trip_size_out_of_bounds_is_invalid() -> None:
    with pytest.raises(errors.InvalidArgument):
        await monitoring().s3_round_trip(2 * 1024 * 1024)


async def test_processing_status_lists_jobs_and_scripts_no_watcher_heard_of() -> None:
    bucket = FakeBucket({f"input/p/p_v{v}.py": b"x = 1\n" for v in (1, 2, 3)})
    bucket.objects["input/p/p_v4.py"] = b"x = 1\n"
    jobs = FakeJobs([job(1), job(2, "processing"), job(3, "queued")])
    status = await monitoring(bucket, jobs).processing_status("p")
    assert [(r.version, r.state) for r in status.versions] == [
        (1, "completed"),
        (2, "processing"),
        (3, "queued"),
        (4, UNTRACKED),
    ]
    assert status.versions[0].detection_latency_seconds == pytest.approx(0.1)
    assert status.versions[1].duration_seconds == pytest.approx(58)  # so far
    assert status.versions[1].queued_seconds == pytest.approx(3)  # then a worker started it
    assert status.versions[2].queued_seconds == pytest.approx(57)  # still waiting
    assert status.counts == {"completed": 1, "processing": 1, "queued": 1, UNTRACKED: 1}
    with pytest.raises(errors.NotFound):
        await monitoring(bucket, jobs).processing_status("other")
    with pytest.raises(errors.InvalidArgument):
        await monitoring(bucket, jobs).processing_status("../p")


async def test_the_metrics_summary_computes_percentiles_over_decided_versions() -> None:
    jobs = FakeJobs(
        [job(v, took=float(v), seen=v / 100) for v in range(1, 21)]
        + [job(21, "processing"), job(22, "queued")]
    )
    summary = await monitoring(jobs=jobs).metrics_summary(0)
    assert summary.uploads == 22 and summary.pending == 2
    assert summary.jobs_by_state == {
        "queued": 1,
        "processing": 1,
        "completed": 20,
        "error": 0,
        "timeout": 0,
    }
    assert summary.job_duration.p50_seconds == 10 and summary.job_duration.p95_seconds == 19
    assert summary.detection_latency.samples == 20
    assert summary.detection_latency.max_seconds == pytest.approx(0.2)
    assert (summary.worker_queue, summary.worker_in_flight, summary.completion_events) == (3, 1, 7)

    blind = await monitoring(jobs=jobs, streams=FakeStreams(down=True)).metrics_summary(60)
    assert (blind.worker_queue, blind.completion_events) == (-1, -1)  # unknown, not zero
    assert blind.since == NOW - dt.timedelta(seconds=60)
    assert percentile([], 0.5) == 0.0 and percentile([3.0, 1.0, 2.0], 0.5) == 2.0


async def test_config_validation_reads_the_streams_and_the_workers_consumer() -> None:
    good = await monitoring(s3_endpoint="https://s3.example.com").validate_config()
    assert good.valid and all(c.status == OK for c in good.checks), good.checks

    slow_redelivery = FakeStreams(
        workers=ConsumerState(0, 0, 1, ack_wait_seconds=300, max_deliver=3)
    )
    warned = await monitoring(streams=slow_redelivery).validate_config()
    assert warned.valid
    [redelivery] = [c for c in warned.checks if c.name == "worker consumer cadpipe-worker"]
    assert redelivery.status == WARNING and "900 s" in redelivery.detail

    bad = await monitoring(
        jobs=FakeJobs(indexes=["_id_"]),
        streams=FakeStreams(window=60),
        s3_endpoint="ftp://files",
        scripts_addr="",
    ).validate_config()
    assert not bad.valid
    failed = {c.name for c in bad.checks if c.status == FAILED}
    assert failed == {
        "mongodb jobs indexes",
        "stream CADPIPE_SCRIPTS",
        "stream CADPIPE_JOBS",
        "s3 endpoint",
    }
    plain = await monitoring(s3_endpoint="http://minio.example.com:9000").validate_config()
    endpoint = next(c for c in plain.checks if c.name == "s3 endpoint")
    assert endpoint.status == WARNING and "unencrypted" in endpoint.detail


# --- the gRPC interceptor and health servicer on a real server -------------------------------


async def test_the_interceptor_counts_by_code_and_sets_the_log_context() -> None:
    metrics = ServiceMetrics("unit")
    seen: list[dict[str, Any]] = []

    async def get_status(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        seen.append(logs.current_log_context())
        if request.project == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such project")
        if request.project == "boom":
            raise RuntimeError("a bug")
        return status_pb2.ProjectStatus(project=request.project)

    handler = grpc.method_handlers_generic_handler(
        "cadpipe.v1.StatusService",
        {
            "GetStatus": grpc.unary_unary_rpc_method_handler(
                get_status,
                request_deserializer=status_pb2.GetStatusRequest.FromString,
                response_serializer=status_pb2.ProjectStatus.SerializeToString,
            )
        },
    )
    server = GrpcServer(
        "127.0.0.1",
        0,
        service_names=[],
        interceptors=[ObservingInterceptor(GrpcServerMetrics(metrics.registry))],
    )
    server.server.add_generic_rpc_handlers((handler,))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = channel.unary_unary(
                "/cadpipe.v1.StatusService/GetStatus",
                request_serializer=status_pb2.GetStatusRequest.SerializeToString,
                response_deserializer=status_pb2.ProjectStatus.FromString,
            )
            await call(
                status_pb2.GetStatusRequest(project="p", version=2),
                metadata=(("x-request-id", "abc-123"),),
            )
            for project in ("missing", "boom"):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await call(
                        status_pb2.GetStatusRequest(project=project),
                        metadata=(("x-request-id", "not ok!"),),
                    )
            # a bug is INTERNAL, its text kept from the caller, its request id given to them
            assert raised.value.code() == grpc.StatusCode.INTERNAL
            assert "a bug" not in (raised.value.details() or "")
            assert seen[2]["request_id"] in (raised.value.details() or "")
    finally:
        await server.shutdown(0)

    assert seen[0] == {
        "request_id": "abc-123",
        "rpc": "cadpipe.v1.StatusService/GetStatus",
        "project": "p",
        "version": 2,
    }
    # a malformed id is replaced, not carried into the logs; version 0 (latest) is left out
    assert seen[1]["request_id"] != "not ok!" and len(seen[1]["request_id"]) == 32
    assert "version" not in seen[1]

    def handled(code: str) -> float:
        return sample_value(
            metrics.registry,
            "grpc_server_handled_total",
            {
                "grpc_service": "cadpipe.v1.StatusService",
                "grpc_method": "GetStatus",
                "grpc_type": "unary",
                "grpc_code": code,
            },
        )

    assert (handled("OK"), handled("NOT_FOUND"), handled("INTERNAL")) == (1, 1, 1)


async def test_an_open_health_watch_ends_at_shutdown_instead_of_holding_it() -> None:
    server = GrpcServer("127.0.0.1", 0, service_names=["svc"])
    await server.start()
    seen: list[int] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="svc")
        )
        seen.append((await call.read()).status)
        started = time.monotonic()
        await server.shutdown(10)  # the grace a watch used to hold in full
        elapsed = time.monotonic() - started
        while (reply := await call.read()) is not grpc.aio.EOF:
            seen.append(reply.status)
        code = await call.code()
    assert elapsed < 3, elapsed
    assert seen[0] == SERVING and seen[-1] == NOT_SERVING
    assert code == grpc.StatusCode.OK


# --- dependency failures counted where the client library sees them -------------------------


async def test_s3_calls_and_failures_are_counted(
    bucket: s3.Bucket, s3_settings: S3Settings
) -> None:
    metrics = ServiceMetrics("unit")
    client = s3.make_client(s3_settings)
    metrics.instrument_s3(client)
    counted = s3.Bucket(client, bucket.name)
    await asyncio.to_thread(counted.put, "a/key", b"x", content_type="text/plain")
    assert await asyncio.to_thread(counted.head, "a/missing") is None  # a 404 is an answer

    def requests(operation: str, status: str) -> float:
        labels = {"operation": operation, "status": status}
        return sample_value(metrics.registry, "cadpipe_s3_requests_total", labels)

    assert requests("PutObject", "200") == 1 and requests("HeadObject", "404") == 1
    latency = {"operation": "PutObject"}
    assert sample_value(metrics.registry, "cadpipe_s3_request_duration_seconds_count", latency) == 1
    assert (
        sample_value(
            metrics.registry, "cadpipe_dependency_errors_total", {"dependency": "s3", "kind": "404"}
        )
        == 0
    )

    nowhere = S3Settings(
        **{**s3_settings.model_dump(), "s3_endpoint_url": f"http://127.0.0.1:{free_port()}"}
    )
    down = s3.make_client(nowhere)
    metrics.instrument_s3(down)
    with pytest.raises(Exception, match="Could not connect"):
        await asyncio.to_thread(s3.Bucket(down, bucket.name).ping)
    errors = {"dependency": "s3", "kind": "transport"}
    assert sample_value(metrics.registry, "cadpipe_dependency_errors_total", errors) >= 1
    assert requests("HeadBucket", "transport") >= 1


async def test_mongodb_heartbeat_failures_are_counted() -> None:
    metrics = ServiceMetrics("unit")
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{free_port()}",
        serverSelectionTimeoutMS=200,
        connectTimeoutMS=200,
        event_listeners=metrics.mongo_listeners(),
    )
    try:
        deadline = time.monotonic() + 10
        errors = {"dependency": "mongodb", "kind": "heartbeat"}
        while sample_value(metrics.registry, "cadpipe_dependency_errors_total", errors) < 1:
            assert time.monotonic() < deadline, "no heartbeat failure counted"
            await asyncio.sleep(0.05)
    finally:
        client.close()


def test_http_metrics_label_the_route_template_never_the_raw_path() -> None:
    table = derive_routes_from_modules(default_modules())
    middleware = HttpMetricsMiddleware(
        lambda *_: None,  # type: ignore[arg-type,return-value]
        metrics=HttpMetrics(ServiceMetrics("unit").registry),
        table=table,
    )

    def route(method: str, path: str) -> str:
        return middleware.route_of({"method": method, "path": path, "raw_path": path.encode()})

    assert route("GET", "/api/projects/alpha/status") == "/api/projects/{project}/status"
    assert route("GET", "/api/monitoring/projects/x/processing-status") == (
        "/api/monitoring/projects/{project}/processing-status"
    )
    assert route("GET", "/readyz") == "/readyz"
    assert route("GET", "/wp-admin/../../etc/passwd") == UNMATCHED
    assert route("DELETE", "/api/projects/alpha/status") == UNMATCHED  # 405
