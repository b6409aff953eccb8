"""The script service over gRPC against moto's S3 server, nats-server and mongomock (or the
MongoDB named by MONGODB_URI): what a client sees, what lands in S3, MongoDB and on NATS."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scripts_harness import Service, bucket_listing, fetch_uploaded, scripts_settings

from cadpipe import layout, messaging
from cadpipe.adapters import s3
from cadpipe.devstack import free_port
from cadpipe.settings import MongoSettings, NatsSettings, S3Settings
from cadpipe.v1 import events_pb2, scripts_pb2, scripts_pb2_grpc
from services.scripts.bootstrap import EVENTS_HEALTH, SERVICE_NAME, start

SCRIPT = """import FreeCAD as App
import Part, os
doc = App.newDocument("Box")
box = doc.addObject("Part::Box", "Box")
doc.recompute()
Part.export([box], os.path.join(os.environ["FREECAD_OUTPUT"], "box.step"))
"""


async def upload(service: Service, project: str, script: str = SCRIPT, **kw: Any) -> Any:
    request = scripts_pb2.UploadScriptRequest(project=project, script=script, **kw)
    return await service.stub.UploadScript(request, timeout=10)


async def test_upload_list_get_round_trip(
    service: Service, unique: str, mongo_db: Any, js: Any
) -> None:
    project = f"rt-{unique}"
    first = await upload(service, project, metadata={"author": "llm", "prompt": "a box"})
    second = await service.stub.UploadScript(
        scripts_pb2.UploadScriptRequest(project=project, script_bytes=b"x = 2\n"), timeout=10
    )
    assert (first.script.version, second.script.version) == (1, 2)
    assert not first.replayed
    v1 = first.script
    assert v1.key == f"input/{project}/{project}_v1.py"
    assert v1.sha256 == hashlib.sha256(SCRIPT.encode()).hexdigest()
    assert v1.size_bytes == len(SCRIPT.encode())
    assert v1.content_type == "text/x-python"
    assert dict(v1.metadata) == {"author": "llm", "prompt": "a box"}
    assert v1.uploaded_at.seconds > 0

    listed = await service.stub.ListScripts(
        scripts_pb2.ListScriptsRequest(project=project), timeout=10
    )
    assert [s.version for s in listed.scripts] == [1, 2]
    assert listed.scripts[0] == v1
    assert listed.next_page_token == ""

    got = await service.stub.GetScript(
        scripts_pb2.GetScriptRequest(project=project, version=1), timeout=10
    )
    assert got.content == SCRIPT
    assert got.script == v1

    # the bytes and metadata in S3
    stored = service.bucket.get(v1.key)
    assert stored is not None
    assert stored.body == SCRIPT.encode()
    assert stored.content_type == "text/x-python"
    assert stored.metadata["sha256"] == v1.sha256
    assert stored.metadata["cadpipe-metadata"] == '{"author":"llm","prompt":"a box"}'
    assert stored.metadata["uploaded-at"].startswith(v1.uploaded_at.ToDatetime().isoformat()[:19])

    # the index in MongoDB
    doc = mongo_db["versions"].find_one({"project": project, "version": 1})
    assert (doc["sha256"], doc["size_bytes"], doc["metadata"]) == (
        v1.sha256,
        v1.size_bytes,
        {"author": "llm", "prompt": "a box"},
    )
    assert mongo_db["projects"].find_one({"_id": project})["latest"] == 2

    # the uploaded events on the wire, each once, with its message id
    messages = await fetch_uploaded(js, project, at_least=2)
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [
        messaging.uploaded_msg_id(project, 1),
        messaging.uploaded_msg_id(project, 2),
    ]
    event = messaging.decode(messages[0].data, events_pb2.ScriptUploaded)
    assert (event.project, event.version, event.key, event.sha256, event.size_bytes) == (
        project,
        1,
        v1.key,
        v1.sha256,
        v1.size_bytes,
    )
    assert event.uploaded_at == v1.uploaded_at


async def test_the_event_is_published_moments_after_the_upload(
    service: Service, unique: str, nats_settings: NatsSettings
) -> None:
    project = f"fast-{unique}"
    await asyncio.wait_for(service.running.publisher.connected.wait(), 10)
    nc = await messaging.connect(nats_settings, name="test")
    try:
        arrived: asyncio.Queue[float] = asyncio.Queue()

        async def on_event(msg: Any) -> None:
            arrived.put_nowait(time.monotonic())

        await nc.subscribe(messaging.uploaded_subject(project), cb=on_event)
        await nc.flush()
        await upload(service, project)
        returned = time.monotonic()
        delay = await asyncio.wait_for(arrived.get(), 5) - returned
    finally:
        await nc.close()
    # the usual figure is about a millisecond; the bound is for a noisy 2-core machine
    assert delay < 1.0


async def test_listing_pages_in_version_order(service: Service, unique: str) -> None:
    project = f"pages-{unique}"
    for i in range(12):
        await upload(service, project, script=f"x = {i}\n")
    seen: list[int] = []
    token = ""
    while True:
        page = await service.stub.ListScripts(
            scripts_pb2.ListScriptsRequest(project=project, page_size=5, page_token=token),
            timeout=10,
        )
        seen += [s.version for s in page.scripts]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(range(1, 13))  # 10, 11, 12 after 9, not after 1


BAD_UPLOADS: list[tuple[str, dict[str, Any], str]] = [
    ("dot-dot", {"project": "../x", "script": "x = 1\n"}, "only ASCII letters"),
    ("slash", {"project": "a/b", "script": "x = 1\n"}, "only ASCII letters"),
    ("empty name", {"project": "", "script": "x = 1\n"}, "project name is empty"),
    ("65 characters", {"project": "p" * 65, "script": "x = 1\n"}, "65 characters long"),
    ("look-alike", {"project": "proj\u0430", "script": "x = 1\n"}, "only ASCII letters"),
    ("oversize", {"script": "#" * (1024 * 1024) + "\n"}, "1048577 bytes; at most 1048576"),
    ("not UTF-8", {"script_bytes": b"x = '\xe9'\n"}, "not UTF-8: byte 0xe9 at offset 5"),
    ("syntax error", {"script": "x = 1\nif x\n    y = 2\n"}, "(line 2, column 5)"),
    ("no script", {}, "script is missing"),
    (
        "metadata count",
        {"script": "x = 1\n", "metadata": {f"k{i}": "v" for i in range(33)}},
        "33 entries",
    ),
    (
        "metadata size",
        {"script": "x = 1\n", "metadata": {"a": "x" * 1000, "b": "y" * 1000}},
        "at most 1536",
    ),
    ("metadata key", {"script": "x = 1\n", "metadata": {"a.b": "v"}}, "metadata key 'a.b'"),
]


async def test_bad_input_is_refused_with_the_reason_and_changes_nothing(
    service: Service, unique: str
) -> None:
    project = f"bad-{unique}"
    await upload(service, project, script="x = 0\n")
    before = bucket_listing(service.bucket)
    for name, fields, says in BAD_UPLOADS:
        request = scripts_pb2.UploadScriptRequest(**{"project": project, **fields})
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await service.stub.UploadScript(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert says in (caught.value.details() or ""), (name, caught.value.details())
        # the field at fault, as google.rpc.BadRequest (what grpc-gateway puts in `details`)
        trailer = dict(caught.value.trailing_metadata() or ())["grpc-status-details-bin"]
        status = status_pb2.Status.FromString(trailer)
        bad_request = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad_request)
        assert bad_request.field_violations[0].field in {"project", "script", "metadata"}, name
    assert bucket_listing(service.bucket) == before

    reads: list[tuple[Any, grpc.StatusCode, str]] = [
        (
            scripts_pb2.GetScriptRequest(project=project, version=2),
            grpc.StatusCode.NOT_FOUND,
            "no version 2",
        ),
        (
            scripts_pb2.GetScriptRequest(project=project, version=-1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "1 or more",
        ),
        (
            scripts_pb2.GetScriptRequest(project=project, version=0),
            grpc.StatusCode.INVALID_ARGUMENT,
            "1 or more",
        ),
        (
            scripts_pb2.GetScriptRequest(project="../x", version=1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ASCII",
        ),
        (
            scripts_pb2.ListScriptsRequest(project=project, page_token="nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token",
        ),
        (
            scripts_pb2.ListScriptsRequest(project=project, page_size=-5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_size",
        ),
        (scripts_pb2.ListScriptsRequest(project="a/b"), grpc.StatusCode.INVALID_ARGUMENT, "ASCII"),
    ]
    for request, code, says in reads:
        call = (
            service.stub.GetScript
            if isinstance(request, scripts_pb2.GetScriptRequest)
            else service.stub.ListScripts
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request, timeout=10)
        assert caught.value.code() == code, request
        assert says in (caught.value.details() or ""), (request, caught.value.details())
    assert bucket_listing(service.bucket) == before


async def test_an_idempotency_key_replays_the_first_version(service: Service, unique: str) -> None:
    project = f"idem-{unique}"
    calls = [
        upload(service, project, idempotency_key="req-1", metadata={"a": "1"}) for _ in range(5)
    ]
    results = await asyncio.gather(*calls)
    assert {r.script.version for r in results} == {1}
    assert sorted(r.replayed for r in results) == [False, True, True, True, True]
    later = await upload(service, project, idempotency_key="req-1", metadata={"a": "1"})
    assert (later.script.version, later.replayed) == (1, True)
    assert later.script == results[0].script
    keys = [o.key for o in service.bucket.list(layout.project_input_prefix(project))]
    assert keys == [f"input/{project}/{project}_v1.py"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await upload(service, project, script="x = 'other'\n", idempotency_key="req-1")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "different script" in (caught.value.details() or "")
    assert (await upload(service, project, idempotency_key="req-2")).script.version == 2


async def test_health_is_serving_once_s3_and_mongodb_answer(service: Service) -> None:
    health = health_pb2_grpc.HealthStub(service.channel)
    for name in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await asyncio.wait_for(service.running.publisher.connected.wait(), 10)
    deadline = time.monotonic() + 10
    while True:  # the events entry turns SERVING after the publisher's first round
        reply = await health.Check(health_pb2.HealthCheckRequest(service=EVENTS_HEALTH), timeout=5)
        if reply.status == health_pb2.HealthCheckResponse.SERVING or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_metrics_count_calls_by_outcome_and_published_events(
    bucket: s3.Bucket,
    s3_settings: S3Settings,
    mongo_settings: MongoSettings,
    nats_settings: NatsSettings,
    unique: str,
) -> None:
    port = free_port()
    settings = scripts_settings(
        s3_settings, mongo_settings, nats_settings.nats_url, metrics_port=port
    )
    async with (
        start(settings) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http,
    ):
        stub = scripts_pb2_grpc.ScriptServiceStub(channel)
        await stub.UploadScript(
            scripts_pb2.UploadScriptRequest(project=f"m-{unique}", script="x = 1\n")
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetScript(scripts_pb2.GetScriptRequest(project=f"m-{unique}", version=9))
        deadline = time.monotonic() + 10
        while True:
            text = (await http.get("/metrics")).text
            if "cadpipe_scripts_events_published_total 1.0" in text or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    # calls by method and code come from the shared interceptor (cadpipe.grpc_observe)
    assert (
        'grpc_server_handled_total{grpc_code="NOT_FOUND",grpc_method="GetScript",'
        'grpc_service="cadpipe.v1.ScriptService",grpc_type="unary"} 1.0'
    ) in text
    assert "cadpipe_scripts_events_published_total 1.0" in text
    assert "cadpipe_scripts_outbox_pending 0.0" in text
