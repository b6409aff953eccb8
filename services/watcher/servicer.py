"""Thin gRPC entrypoints: request message -> reads / broadcast -> response message. Errors are
cadpipe.errors, turned into gRPC statuses by the server interceptor (cadpipe.grpc_observe)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from cadpipe.callers import current_caller
from cadpipe.timestamps import to_timestamp
from cadpipe.v1 import artifacts_pb2, artifacts_pb2_grpc, status_pb2, status_pb2_grpc
from services.watcher import domain, messages
from services.watcher.broadcast import StatusBroadcast
from services.watcher.domain import LogObject
from services.watcher.reads import Reads


def _log_message(log: LogObject) -> artifacts_pb2.LogFile:
    return artifacts_pb2.LogFile(
        key=log.key,
        name=log.name,
        version=log.parsed.version,
        level=log.parsed.level,
        written_at=to_timestamp(log.parsed.written_at),
        size_bytes=log.size_bytes,
    )


class StatusServicer(status_pb2_grpc.StatusServiceServicer):
    def __init__(self, reads: Reads, statuses: StatusBroadcast) -> None:
        self._reads = reads
        self._statuses = statuses

    async def GetStatus(
        self, request: status_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> status_pb2.ProjectStatus:
        return await self._reads.status(request.project, request.version, current_caller())

    async def WatchStatus(
        self, request: status_pb2.WatchStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[status_pb2.ProjectStatus]:
        # Subscribed before the current status is read, so no change falls in between; what
        # was queued meanwhile and is not newer is skipped.
        domain.check_project(request.project)
        with self._statuses.subscribe(request.project) as changes:
            # the caller's access is checked here too: NOT_FOUND ends the stream at once
            last = await self._reads.status(request.project, caller=current_caller())
            yield last
            generations: dict[str, int] = {}
            async for status in changes:
                # a generation's progress has its own order; the versions' de-dup is untouched
                if status.HasField("generation"):
                    if messages.generation_news(status, generations):
                        yield status
                    continue
                if messages.supersedes(status, last):
                    yield status
                    last = status


class ArtifactServicer(artifacts_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, reads: Reads) -> None:
        self._reads = reads

    async def ListOutputs(
        self, request: artifacts_pb2.ListOutputsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> artifacts_pb2.ListOutputsResponse:
        outputs = await self._reads.outputs(request.project, request.version, current_caller())
        return artifacts_pb2.ListOutputsResponse(
            project=outputs.project,
            version=outputs.version,
            outputs=[messages.output_message(o) for o in outputs.files],
        )

    async def GetDownloadUrl(
        self,
        request: artifacts_pb2.GetDownloadUrlRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> artifacts_pb2.DownloadUrl:
        download = await self._reads.download(
            request.project, request.format, request.version, current_caller()
        )
        return artifacts_pb2.DownloadUrl(
            url=download.url,
            expires_at=to_timestamp(download.expires_at),
            file=messages.output_message(download.file),
            version=download.version,
        )

    async def GetReport(
        self, request: artifacts_pb2.GetReportRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> artifacts_pb2.GeometryReport:
        return await self._reads.report(request.project, request.version, current_caller())

    async def ListLogs(
        self, request: artifacts_pb2.ListLogsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> artifacts_pb2.ListLogsResponse:
        logs = await self._reads.logs(request.project, request.version, current_caller())
        return artifacts_pb2.ListLogsResponse(logs=[_log_message(g) for g in logs])

    async def GetLog(
        self, request: artifacts_pb2.GetLogRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> artifacts_pb2.GetLogResponse:
        log, content = await self._reads.log(request.project, request.name, current_caller())
        return artifacts_pb2.GetLogResponse(log=_log_message(log), content=content)
