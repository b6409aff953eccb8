"""The gRPC entrypoint: request message -> use case (versioning.Scripts) -> response message.
Errors are cadpipe.errors, turned into gRPC statuses by the server interceptor
(cadpipe.grpc_observe)."""

from __future__ import annotations

import grpc

from cadpipe.callers import current_caller
from cadpipe.timestamps import to_timestamp
from cadpipe.v1 import scripts_pb2, scripts_pb2_grpc
from services.scripts.domain import VersionRecord
from services.scripts.versioning import Scripts, UploadRequest


def script_version(record: VersionRecord) -> scripts_pb2.ScriptVersion:
    return scripts_pb2.ScriptVersion(
        project=record.project,
        version=record.version,
        key=record.key,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        uploaded_at=to_timestamp(record.uploaded_at),
        content_type=record.content_type,
        metadata=dict(record.metadata),
    )


class ScriptServicer(scripts_pb2_grpc.ScriptServiceServicer):
    def __init__(self, scripts: Scripts) -> None:
        self._scripts = scripts

    async def UploadScript(
        self, request: scripts_pb2.UploadScriptRequest, context: grpc.aio.ServicerContext
    ) -> scripts_pb2.UploadScriptResponse:
        source = request.WhichOneof("source")
        script = getattr(request, source) if source else None
        result = await self._scripts.upload(
            UploadRequest(
                project=request.project,
                script=script,
                metadata=dict(request.metadata),
                idempotency_key=request.idempotency_key,
                caller=current_caller(),
            )
        )
        return scripts_pb2.UploadScriptResponse(
            script=script_version(result.record), replayed=result.replayed
        )

    async def ListScripts(
        self, request: scripts_pb2.ListScriptsRequest, context: grpc.aio.ServicerContext
    ) -> scripts_pb2.ListScriptsResponse:
        page = await self._scripts.list_versions(
            request.project, request.page_size, request.page_token, current_caller()
        )
        return scripts_pb2.ListScriptsResponse(
            scripts=[script_version(r) for r in page.records],
            next_page_token=page.next_page_token,
        )

    async def ListProjects(
        self, request: scripts_pb2.ListProjectsRequest, context: grpc.aio.ServicerContext
    ) -> scripts_pb2.ListProjectsResponse:
        page = await self._scripts.list_projects(
            request.page_size, request.page_token, current_caller()
        )
        return scripts_pb2.ListProjectsResponse(
            projects=[
                scripts_pb2.ProjectSummary(
                    project=p.project,
                    latest_version=p.latest,
                    created_at=to_timestamp(p.created_at) if p.created_at else None,
                    updated_at=to_timestamp(p.updated_at),
                )
                for p in page.projects
            ],
            next_page_token=page.next_page_token,
        )

    async def GetScript(
        self, request: scripts_pb2.GetScriptRequest, context: grpc.aio.ServicerContext
    ) -> scripts_pb2.GetScriptResponse:
        record, body = await self._scripts.get_version(
            request.project, request.version, current_caller()
        )
        # uploads are checked to be UTF-8; a script put there by other means may not be
        content = body.decode("utf-8", errors="replace")
        return scripts_pb2.GetScriptResponse(script=script_version(record), content=content)
