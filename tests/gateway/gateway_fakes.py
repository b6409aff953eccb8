"""Small gRPC servicers standing in for the script service and the watcher behind the gateway.
They record every request with its metadata, and answer from plain dictionaries so a test says
what the backend should do."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from google.rpc import status_pb2 as rpc_status_pb2

from cadpipe.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    scripts_pb2,
    scripts_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)


@dataclass
class Received:
    method: str
    request: Message
    metadata: dict[str, str]


@dataclass
class Recorder:
    received: list[Received] = field(default_factory=list)
    refuse: dict[str, tuple[grpc.StatusCode, str]] = field(default_factory=dict)
    """project name → the status every method answers for it"""

    async def record(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        self.received.append(Received(method, request, metadata))
        refusal = self.refuse.get(request.project)
        if refusal:
            await context.abort(*refusal)

    def last(self, method: str) -> Received:
        found = [r for r in self.received if r.method == method]
        assert found, f"{method} was never called; calls: {[r.method for r in self.received]}"
        return found[-1]

    def calls(self, method: str) -> int:
        return sum(1 for r in self.received if r.method == method)


def bad_request_details(field_name: str, description: str) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying a google.rpc.Status with a BadRequest detail."""
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=field_name, description=description
                )
            ]
        )
    )
    status = rpc_status_pb2.Status(code=3, message=description, details=[detail])
    return (("grpc-status-details-bin", status.SerializeToString()),)


class FakeScripts(scripts_pb2_grpc.ScriptServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def UploadScript(
        self, request: scripts_pb2.UploadScriptRequest, context: grpc.aio.ServicerContext
    ) -> scripts_pb2.UploadScriptResponse:
        await self.recorder.record("UploadScript", request, context)
        if request.project == "detailed":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "script: line 1 column 5: invalid syntax",
                trailing_metadata=bad_request_details("script", "line 1 column 5: invalid syntax"),
            )
        body = request.script.encode() if request.HasField("script") else request.script_bytes
        version = scripts_pb2.ScriptVersion(
            project=request.project,
            version=7,
            key=f"input/{request.project}/{request.project}_v7.py",
            size_bytes=len(body),
            content_type="text/x-python",
            metadata=dict(request.metadata),
        )
        version.uploaded_at.FromSeconds(1_800_000_000)
        return scripts_pb2.UploadScriptResponse(script=version)

    async def ListScripts(
        self, request: scripts_pb2.ListScriptsRequest, context: grpc.aio.ServicerContext
    ) -> scripts_pb2.ListScriptsResponse:
        await self.recorder.record("ListScripts", request, context)
        return scripts_pb2.ListScriptsResponse(
            scripts=[scripts_pb2.ScriptVersion(project=request.project, version=v) for v in (1, 2)],
            next_page_token="next" if request.page_size == 2 else "",
        )

    async def GetScript(
        self, request: scripts_pb2.GetScriptRequest, context: grpc.aio.ServicerContext
    ) -> scripts_pb2.GetScriptResponse:
        await self.recorder.record("GetScript", request, context)
        if request.version > 2:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"version {request.version} does not exist"
            )
        return scripts_pb2.GetScriptResponse(
            script=scripts_pb2.ScriptVersion(project=request.project, version=request.version),
            content="x = 1\n",
        )


class FakeStatus(status_pb2_grpc.StatusServiceServicer):
    """WatchStatus sends the current status, then whatever a test puts in `updates`; `watching`
    is set while a stream is open and `watch_ended` once the gateway went away from it."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.updates: asyncio.Queue[status_pb2.ProjectStatus | grpc.StatusCode] = asyncio.Queue()
        self.watching = asyncio.Event()
        self.watch_ended = asyncio.Event()

    async def GetStatus(
        self, request: status_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.ProjectStatus:
        await self.recorder.record("GetStatus", request, context)
        return status_pb2.ProjectStatus(
            project=request.project, version=request.version or 3, state="completed"
        )

    async def WatchStatus(
        self, request: status_pb2.WatchStatusRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        await self.recorder.record("WatchStatus", request, context)
        self.watching.set()
        try:
            if request.project != "quiet":  # "quiet" says nothing until a test puts an update
                yield status_pb2.ProjectStatus(
                    project=request.project, version=1, state="processing"
                )
            while True:
                update = await self.updates.get()
                if isinstance(update, grpc.StatusCode):
                    if update == grpc.StatusCode.OK:
                        return
                    await context.abort(update, "the watcher gave up")
                yield update
        finally:
            self.watch_ended.set()


class FakeArtifacts(artifacts_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def ListOutputs(
        self, request: artifacts_pb2.ListOutputsRequest, context: grpc.aio.ServicerContext
    ) -> artifacts_pb2.ListOutputsResponse:
        await self.recorder.record("ListOutputs", request, context)
        return artifacts_pb2.ListOutputsResponse(
            project=request.project,
            version=request.version or 3,
            outputs=[
                artifacts_pb2.OutputFile(name="MyHeadlessModel.stl", format="stl", size_bytes=2**40)
            ],
        )

    async def GetDownloadUrl(
        self, request: artifacts_pb2.GetDownloadUrlRequest, context: grpc.aio.ServicerContext
    ) -> artifacts_pb2.DownloadUrl:
        await self.recorder.record("GetDownloadUrl", request, context)
        return artifacts_pb2.DownloadUrl(
            url=f"http://s3/{request.project}.{request.format}", version=3
        )

    async def ListLogs(
        self, request: artifacts_pb2.ListLogsRequest, context: grpc.aio.ServicerContext
    ) -> artifacts_pb2.ListLogsResponse:
        await self.recorder.record("ListLogs", request, context)
        return artifacts_pb2.ListLogsResponse()

    async def GetLog(
        self, request: artifacts_pb2.GetLogRequest, context: grpc.aio.ServicerContext
    ) -> artifacts_pb2.GetLogResponse:
        await self.recorder.record("GetLog", request, context)
        if request.name == "slow.log":
            await asyncio.sleep(30)  # longer than any deadline a test sets
        return artifacts_pb2.GetLogResponse(content="ok")
