"""The generator's calls to the other services, on behalf of the generation's caller: every call
carries the caller's identity metadata (cadpipe.callers.Caller.metadata) and the internal
service token, exactly as the gateway's calls do, so the script service and the watcher check
ownership as for any other call.

    ScriptService.UploadScript, GetScript     (scripts)
    StatusService.GetStatus, ArtifactService.GetReport   (watcher)

gRPC failures become cadpipe.errors: INVALID_ARGUMENT, NOT_FOUND and the rest keep their
meaning; a service that does not answer is Unavailable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

from cadpipe import errors
from cadpipe.callers import SERVICE_TOKEN_KEY, Caller
from cadpipe.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    scripts_pb2,
    scripts_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)
from services.generator.ports import Measured, Report

_ERRORS: dict[grpc.StatusCode, type[errors.CadpipeError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ABORTED: errors.Conflict,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
}


def translate(error: grpc.aio.AioRpcError, service: str) -> errors.CadpipeError:
    kind = _ERRORS.get(error.code(), errors.Unavailable)
    detail = error.details() or error.code().name
    if kind is errors.Unavailable:
        return errors.Unavailable(f"the {service} service did not answer: {detail}")
    return kind(detail)


class _Calls:
    def __init__(self, service_token: str | None, timeout: float) -> None:
        self._token = service_token
        self._timeout = timeout

    def metadata(self, caller: Caller) -> Sequence[tuple[str, str]]:
        found = list(caller.metadata())
        if self._token:
            found.append((SERVICE_TOKEN_KEY, self._token))
        return found


class ScriptsClient(_Calls):
    def __init__(
        self, channel: grpc.aio.Channel, *, service_token: str | None, timeout: float = 30.0
    ) -> None:
        super().__init__(service_token, timeout)
        self._stub = scripts_pb2_grpc.ScriptServiceStub(channel)

    async def upload(
        self,
        caller: Caller,
        project: str,
        script: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> int:
        try:
            response = await self._stub.UploadScript(
                scripts_pb2.UploadScriptRequest(
                    project=project,
                    script=script,
                    metadata=dict(metadata),
                    idempotency_key=idempotency_key,
                ),
                metadata=self.metadata(caller),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise translate(error, "script") from None
        return int(response.script.version)

    async def read(self, caller: Caller, project: str, version: int) -> str:
        try:
            response = await self._stub.GetScript(
                scripts_pb2.GetScriptRequest(project=project, version=version),
                metadata=self.metadata(caller),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise translate(error, "script") from None
        return str(response.content)


class WatcherClient(_Calls):
    def __init__(
        self, channel: grpc.aio.Channel, *, service_token: str | None, timeout: float = 30.0
    ) -> None:
        super().__init__(service_token, timeout)
        self._status = status_pb2_grpc.StatusServiceStub(channel)
        self._artifacts = artifacts_pb2_grpc.ArtifactServiceStub(channel)

    async def status(self, caller: Caller, project: str, version: int) -> status_pb2.ProjectStatus:
        try:
            return await self._status.GetStatus(
                status_pb2.GetStatusRequest(project=project, version=version),
                metadata=self.metadata(caller),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise translate(error, "watcher") from None

    async def report(self, caller: Caller, project: str, version: int) -> Report:
        try:
            report = await self._artifacts.GetReport(
                artifacts_pb2.GetReportRequest(project=project, version=version),
                metadata=self.metadata(caller),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise translate(error, "watcher") from None
        return report_from_message(report)


def report_from_message(report: artifacts_pb2.GeometryReport) -> Report:
    if not report.HasField("total"):
        return Report(measured=None, freecad_version=report.freecad_version)
    total = report.total
    return Report(
        measured=Measured(
            bbox_mm=(total.x_mm, total.y_mm, total.z_mm),
            volume_mm3=total.volume_mm3,
            area_mm2=total.area_mm2,
            solids=report.solids,
            valid=total.valid,
        ),
        freecad_version=report.freecad_version,
    )
