"""gRPC status → HTTP, as grpc-gateway v2 maps it, and the one JSON error body every failure gets:
`{"code": <grpc code number>, "message": "...", "details": [...]}`.

The gateway's own refusals (no route, wrong method, bad JSON, body too large) use the same body,
so a client handles one error shape whatever produced it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import (
    error_details_pb2,  # noqa: F401 - registers the rich error detail types
    status_pb2,
)

logger = logging.getLogger(__name__)

# runtime.HTTPStatusFromCode in grpc-gateway v2 (runtime/errors.go)
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

_DETAILS_KEY = "grpc-status-details-bin"


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def code_number(code: grpc.StatusCode) -> int:
    number = code.value[0]
    assert isinstance(number, int)
    return number


@dataclass(frozen=True)
class GatewayError(Exception):
    """A failure with its gRPC code; `http` overrides the mapped HTTP status for the few
    refusals HTTP has a better word for than gRPC (405, 413, 415)."""

    code: grpc.StatusCode
    message: str
    details: Sequence[dict[str, Any]] = field(default_factory=tuple)
    http: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @property
    def http_status(self) -> int:
        return self.http if self.http is not None else http_status(self.code)

    def body(self) -> dict[str, Any]:
        return {
            "code": code_number(self.code),
            "message": self.message,
            "details": list(self.details),
        }


def invalid_argument(message: str) -> GatewayError:
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, message)


def from_rpc_error(error: grpc.aio.AioRpcError) -> GatewayError:
    """The backend's status as the client should see it, rich details included when sent."""
    code = error.code()
    message = error.details() or ""
    details = _details(error.trailing_metadata())
    return GatewayError(code, message, details)


def _details(trailing: Any) -> tuple[dict[str, Any], ...]:
    """google.rpc.Status details the backend attached (BadRequest, ErrorInfo, ...), as JSON."""
    if not trailing:
        return ()
    raw = next((value for key, value in trailing if key == _DETAILS_KEY), None)
    if not isinstance(raw, bytes):
        return ()
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except Exception:
        logger.warning("backend sent malformed %s", _DETAILS_KEY)
        return ()
    out: list[dict[str, Any]] = []
    for detail in status.details:
        try:
            out.append(json_format.MessageToDict(detail, preserving_proto_field_name=True))
        except (json_format.Error, TypeError, KeyError):
            # a detail type this gateway does not know: say what it was, not what it held
            out.append({"@type": detail.type_url})
    return tuple(out)
