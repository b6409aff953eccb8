"""The errors a caller is told about, defined once for every service.

Domain code and adapters raise these; one server interceptor (cadpipe.grpc_observe) turns them
into gRPC statuses with their message. Anything else that escapes a handler is a bug: the
interceptor logs it with its traceback and request id and answers INTERNAL, never the
exception's text.

    raise errors.NotFound(f"{project} has no version {version}")
    raise errors.InvalidArgument("project: must be 1 to 64 letters ...", field="project")

Adapters translate their library's failures (botocore, pymongo, NATS) into Unavailable, so a
store that does not answer is UNAVAILABLE (HTTP 503) everywhere, never a bug's INTERNAL.
"""

from __future__ import annotations

import grpc


class CadpipeError(Exception):
    """Base of the errors meant for the caller. The message is shown as it is."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(CadpipeError):
    """The request is wrong; nothing was changed. field names the request field, when one is
    to blame (sent as a google.rpc.BadRequest detail)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class NotFound(CadpipeError):
    """What the request names does not exist, or is not the caller's (worded the same)."""

    code = grpc.StatusCode.NOT_FOUND


class Conflict(CadpipeError):
    """A concurrent change won; retrying may succeed (ABORTED, HTTP 409)."""

    code = grpc.StatusCode.ABORTED


class FailedPrecondition(CadpipeError):
    """The request contradicts the state it meets; retrying the same request will not help."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(CadpipeError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(CadpipeError):
    """A limit was reached (rate, quota, size); retry_after_seconds when it is known."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after_seconds: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Unavailable(CadpipeError):
    """A dependency (S3, MongoDB, NATS, another service, an LLM provider) did not answer."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(CadpipeError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
