"""The gRPC entrypoint: request message -> use case (versioning.Scripts) -> response message, and
the service's errors -> gRPC status codes with the message a caller needs."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.rpc import error_details_pb2, status_pb2

from cadpipe.callers import current_caller
from cadpipe.timestamps import to_timestamp
from cadpipe.v1 import scripts_pb2, scripts_pb2_grpc
from services.scripts.domain import (
    IdempotencyInProgress,
    IdempotencyMismatch,
    InvalidInput,
    NotFound,
    ScriptServiceError,
    Unavailable,
    VersionConflict,
    VersionRecord,
)
from services.scripts.versioning import Scripts, UploadRequest

logger = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]

_CODES: list[tuple[type[ScriptServiceError], grpc.StatusCode]] = [
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (VersionConflict, grpc.StatusCode.ABORTED),
    (IdempotencyInProgress, grpc.StatusCode.ABORTED),
    (IdempotencyMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
]


def status_code(error: ScriptServiceError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _details(error: ScriptServiceError, code: grpc.StatusCode) -> tuple[tuple[str, bytes], ...]:
    """google.rpc.Status with a BadRequest naming the field, in grpc-status-details-bin: what
    grpc-gateway and rich-status clients read as the error's details."""
    if not isinstance(error, InvalidInput):
        return ()
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=error.field, description=error.message
            )
        ]
    )
    detail = AnyProto()
    detail.Pack(bad_request)
    status = status_pb2.Status(code=code.value[0], message=error.message, details=[detail])
    return (("grpc-status-details-bin", status.SerializeToString()),)


def _grpc_errors(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Maps the service's errors to status codes, and reports each call's outcome and time."""

    @functools.wraps(method)
    async def wrapper(
        self: ScriptServicer, request: Req, context: grpc.aio.ServicerContext
    ) -> Resp:
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            response = await method(self, request, context)
            code = grpc.StatusCode.OK
            return response
        except ScriptServiceError as error:
            code = status_code(error)
            level = logging.WARNING if code == grpc.StatusCode.UNAVAILABLE else logging.INFO
            logger.log(level, "%s: %s %s", method.__name__, code.name, error)
            await context.abort(code, str(error), trailing_metadata=_details(error, code))
            raise  # abort() raises; this line is for type checkers
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self._observe(method.__name__, code.name, time.perf_counter() - started)

    return wrapper


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


Observer = Callable[[str, str, float], None]
"""Told (method, status code name, seconds) after each call."""


def _ignore(method: str, code: str, seconds: float) -> None:
    return None


class ScriptServicer(scripts_pb2_grpc.ScriptServiceServicer):
    def __init__(self, scripts: Scripts, observe: Observer = _ignore) -> None:
        self._scripts = scripts
        self._observe = observe

    @_grpc_errors
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

    @_grpc_errors
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

    @_grpc_errors
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

    @_grpc_errors
    async def GetScript(
        self, request: scripts_pb2.GetScriptRequest, context: grpc.aio.ServicerContext
    ) -> scripts_pb2.GetScriptResponse:
        record, body = await self._scripts.get_version(
            request.project, request.version, current_caller()
        )
        # uploads are checked to be UTF-8; a script put there by other means may not be
        content = body.decode("utf-8", errors="replace")
        return scripts_pb2.GetScriptResponse(script=script_version(record), content=content)
