"""One error model (cadpipe.errors) mapped in one interceptor (cadpipe.grpc_observe), on the
services' real servicers: a bug is INTERNAL with the request id, logged with its traceback; a
store that does not answer is UNAVAILABLE, whichever service and adapter met it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from pymongo.errors import ServerSelectionTimeoutError

from cadpipe import errors
from cadpipe.adapters import mongo, s3
from cadpipe.devstack import free_port
from cadpipe.grpc_observe import ObservingInterceptor
from cadpipe.grpc_server import GrpcServer
from cadpipe.settings import S3Settings
from cadpipe.v1 import scripts_pb2, scripts_pb2_grpc, status_pb2, status_pb2_grpc
from services.scripts.servicer import ScriptServicer
from services.scripts.versioning import Scripts
from services.watcher.broadcast import StatusBroadcast
from services.watcher.reads import Reads
from services.watcher.servicer import StatusServicer

pytestmark = pytest.mark.timeout(60)


class _Index:
    """A project index whose reads fail the way the test says."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def latest_version(self, project: str) -> int:
        raise self.error

    async def owner_and_latest(self, project: str) -> tuple[str | None, int]:
        raise self.error


class _Jobs:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def latest(self, project: str, state: str | None = None) -> Any:
        raise self.error


async def _serve(error: Exception) -> AsyncIterator[grpc.aio.Channel]:
    server = GrpcServer("127.0.0.1", 0, service_names=[], interceptors=[ObservingInterceptor()])
    scripts = Scripts(None, _Index(error), None, None)  # type: ignore[arg-type]
    scripts_pb2_grpc.add_ScriptServiceServicer_to_server(ScriptServicer(scripts), server.server)
    reads = Reads(_Jobs(error), None, presign_expiry_seconds=60, max_log_bytes=1000)  # type: ignore[arg-type]
    status_pb2_grpc.add_StatusServiceServicer_to_server(
        StatusServicer(reads, StatusBroadcast()), server.server
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield channel
    finally:
        await server.shutdown(0)


async def _calls(channel: grpc.aio.Channel) -> list[grpc.aio.AioRpcError]:
    """UploadScript (script service), GetStatus and WatchStatus (watcher), each failing."""
    metadata = (("x-request-id", "req-42"),)
    failures = []
    try:
        await scripts_pb2_grpc.ScriptServiceStub(channel).UploadScript(
            scripts_pb2.UploadScriptRequest(project="p", script="x = 1\n"), metadata=metadata
        )
    except grpc.aio.AioRpcError as error:
        failures.append(error)
    status = status_pb2_grpc.StatusServiceStub(channel)
    try:
        await status.GetStatus(status_pb2.GetStatusRequest(project="p"), metadata=metadata)
    except grpc.aio.AioRpcError as error:
        failures.append(error)
    try:
        async for _ in status.WatchStatus(
            status_pb2.WatchStatusRequest(project="p"), metadata=metadata
        ):
            pass
    except grpc.aio.AioRpcError as error:
        failures.append(error)
    return failures


async def test_a_bug_is_internal_with_the_request_id_and_its_traceback_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="cadpipe.grpc_observe")
    async for channel in _serve(KeyError("a bug")):
        failures = await _calls(channel)
    assert [f.code() for f in failures] == [grpc.StatusCode.INTERNAL] * 3
    for failure in failures:
        assert failure.details() == "internal error (request id req-42)"
        assert "a bug" not in (failure.details() or "")  # the bug's text stays in the log
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 3
    assert all(r.exc_info and r.exc_info[0] is KeyError for r in logged)


async def test_a_store_that_does_not_answer_is_unavailable() -> None:
    async for channel in _serve(errors.Unavailable("MongoDB: no server")):
        failures = await _calls(channel)
    assert [f.code() for f in failures] == [grpc.StatusCode.UNAVAILABLE] * 3
    assert {f.details() for f in failures} == {"MongoDB: no server"}


async def test_the_adapters_say_unavailable_for_their_library_failures() -> None:
    nobody = S3Settings(
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_bucket="nobody-home",
        aws_access_key_id="k",
        aws_secret_access_key="s",
    )
    bucket = s3.AsyncBucket(s3.Bucket(s3.make_client(nobody), "nobody-home"))
    with pytest.raises(errors.Unavailable, match=r"^S3: "):
        await bucket.head("input/p/p_v1.py")

    def no_server() -> None:
        raise ServerSelectionTimeoutError("no server")

    with pytest.raises(errors.Unavailable, match=r"^MongoDB: no server"):
        await mongo.in_thread(no_server)
