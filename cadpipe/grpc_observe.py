"""The grpc.aio server interceptor every service installs: each call runs inside a log context
(request id from the caller's `x-request-id` metadata, or a new one; the gRPC method; the
project and version when the request message has those fields), is counted and timed by
method and status code, and has its errors mapped in one place: a cadpipe.errors error becomes
its status with its message, anything else INTERNAL, logged with its traceback.

    GrpcServer(..., interceptors=[ObservingInterceptor(GrpcServerMetrics(metrics.registry))])
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.rpc import error_details_pb2
from google.rpc import status_pb2 as rpc_status_pb2
from prometheus_client import CollectorRegistry, Counter, Histogram

from cadpipe import errors
from cadpipe.logs import REQUEST_ID, REQUEST_ID_HEADER, log_context
from cadpipe.metrics import LATENCY_BUCKETS

logger = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
"""What the gateway accepts from clients too; anything else is replaced, not logged."""


class GrpcServerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by method and status code",
            ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
            registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its end on the server (a whole stream for "
            "streaming RPCs)",
            ["grpc_service", "grpc_method", "grpc_type"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def observe(self, service: str, method: str, kind: str, code: str, seconds: float) -> None:
        self.handled.labels(service, method, kind, code).inc()
        self.handling.labels(service, method, kind).observe(seconds)


def request_id_from(metadata: Any) -> str:
    """The caller's request id, when it sent a well-formed one; else a new one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and _REQUEST_ID.match(value):
            return value
    return uuid.uuid4().hex


def request_fields(request: Any) -> dict[str, Any]:
    """project and version, when the request message has them (most of cadpipe's do)."""
    fields: dict[str, Any] = {}
    descriptor = getattr(request, "DESCRIPTOR", None)
    if descriptor is None:
        return fields
    names = descriptor.fields_by_name
    if "project" in names and isinstance(getattr(request, "project", None), str):
        fields["project"] = request.project or None
    if "version" in names and isinstance(getattr(request, "version", None), int):
        fields["version"] = request.version or None
    return fields


def _status_details(error: errors.CadpipeError) -> tuple[tuple[str, bytes], ...]:
    """google.rpc.Status with a BadRequest naming the field, in grpc-status-details-bin: what
    grpc-gateway and rich-status clients read as the error's details."""
    if not isinstance(error, errors.InvalidArgument) or not error.field:
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
    status = rpc_status_pb2.Status(
        code=error.code.value[0], message=error.message, details=[detail]
    )
    return (("grpc-status-details-bin", status.SerializeToString()),)


async def abort_for(
    error: Exception, context: grpc.aio.ServicerContext[Any, Any], request_id: str
) -> None:
    """Ends the RPC with the status the error stands for (cadpipe.errors), or INTERNAL for
    anything else, logged with its traceback; raises, as context.abort does."""
    if isinstance(error, errors.CadpipeError):
        level = logging.WARNING if error.code == grpc.StatusCode.UNAVAILABLE else logging.INFO
        logger.log(level, "%s: %s", error.code.name, error.message)
        await context.abort(
            error.code, error.message, trailing_metadata=_status_details(error)
        )
    logger.error("unexpected error", exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")


def _code_name(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    code = context.code()
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    for candidate in grpc.StatusCode:  # some grpc versions hand back the number
        if candidate.value[0] == code:
            return candidate.name
    return str(code)


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: GrpcServerMetrics | None = None) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full = handler_call_details.method  # "/cadpipe.v1.ScriptService/UploadScript"
        service, _, method = full.lstrip("/").partition("/")
        request_id = request_id_from(handler_call_details.invocation_metadata)
        call = _Call(self._metrics, service, method, request_id)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                call.unary(handler.unary_unary, "unary"),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                call.streaming(handler.unary_stream, "server_stream", unary_request=True),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                call.unary(handler.stream_unary, "client_stream", unary_request=False),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                call.streaming(handler.stream_stream, "bidi_stream", unary_request=False),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class _Call:
    """One RPC's observation: the log context around its handler, its count and time after."""

    def __init__(
        self, metrics: GrpcServerMetrics | None, service: str, method: str, request_id: str
    ) -> None:
        self._metrics = metrics
        self.service = service
        self.method = method
        self.request_id = request_id

    def _context(self, request: Any) -> Any:
        fields = request_fields(request) if request is not None else {}
        return log_context(
            **{REQUEST_ID: self.request_id, "rpc": f"{self.service}/{self.method}", **fields}
        )

    def _done(self, kind: str, code: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        if self._metrics is not None:
            self._metrics.observe(self.service, self.method, kind, code, elapsed)
        logger.debug("%s/%s %s %.1fms", self.service, self.method, code, elapsed * 1000)

    def unary(self, behavior: Any, kind: str, *, unary_request: bool = True) -> Any:
        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = "UNKNOWN"
            with self._context(request if unary_request else None):
                try:
                    try:
                        response = await behavior(request, context)
                    except (asyncio.CancelledError, grpc.aio.AbortError):
                        raise
                    except Exception as error:
                        await abort_for(error, context, self.request_id)
                    code = _code_name(context)
                    return response
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                except BaseException:
                    # context.abort() raises with the code set; anything else is UNKNOWN
                    code = _code_name(context) if context.code() is not None else "UNKNOWN"
                    raise
                finally:
                    self._done(kind, code, started)

        return observed

    def streaming(self, behavior: Any, kind: str, *, unary_request: bool) -> Any:
        """A streaming handler is either an async generator or a coroutine that writes with
        context.write(); grpc.aio serves each kind differently, so the wrapper is of the same
        kind as the handler."""
        if not inspect.isasyncgenfunction(behavior):
            return self.unary(behavior, kind, unary_request=unary_request)

        async def observed(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            started = time.perf_counter()
            code = "UNKNOWN"
            with self._context(request if unary_request else None):
                try:
                    try:
                        async for item in behavior(request, context):
                            yield item
                    except (asyncio.CancelledError, GeneratorExit, grpc.aio.AbortError):
                        raise
                    except Exception as error:
                        await abort_for(error, context, self.request_id)
                    code = _code_name(context)
                except (asyncio.CancelledError, GeneratorExit):
                    code = "CANCELLED"
                    raise
                except BaseException:
                    code = _code_name(context) if context.code() is not None else "UNKNOWN"
                    raise
                finally:
                    self._done(kind, code, started)

        return observed
