"""The ASGI app: a thin HTTP entrypoint over the pure pieces (routes, transcode, errors, openapi)
and the gRPC backends.

Seams for what comes later (authentication, metrics): `create_app(middleware=...)` adds
Starlette middleware inside the request-id one; such a middleware may refuse a request, and may
put `(key, value)` pairs in `scope["state"]["grpc_metadata"]` (e.g. the caller's identity),
which every gRPC call then carries next to `x-request-id`. `ignored_query_params` names query
parameters the transcoder must leave alone (e.g. a token for EventSource, which cannot send
headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

import grpc
import httpx
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.routing import Route as StarletteRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from cadpipe.v1 import artifacts_pb2
from services.gateway import sse
from services.gateway.backends import BackendHealth, Metadata
from services.gateway.errors import GatewayError, from_rpc_error, invalid_argument
from services.gateway.openapi import build_openapi
from services.gateway.routes import Route, RouteTable, route_of
from services.gateway.transcode import HttpInput, build_request, to_json
from services.gateway.webapp import STATIC_PREFIX, WebApp, download_request, is_app_path, stream_url

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
FORWARD_METADATA = "grpc_metadata"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_MAX_QUERY_FIELDS = 100
_TRANSCODED_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


class RpcClient(Protocol):
    """What the app needs from the gRPC side (services.gateway.backends.Backends)."""

    async def unary(
        self, route: Route, request: Message, *, metadata: Metadata, deadline: float
    ) -> Message: ...

    def server_stream(
        self, route: Route, request: Message, *, metadata: Metadata, timeout: float | None = None
    ) -> grpc.aio.UnaryStreamCall[Any, Any]: ...

    async def check_all(self, deadline: float) -> list[BackendHealth]: ...


@dataclass
class Gateway:
    table: RouteTable
    backends: RpcClient
    deadline_seconds: float = 30.0
    max_body_bytes: int = 2 * 1024 * 1024
    keepalive_seconds: float = 15.0
    readiness_timeout_seconds: float = 2.0
    ignored_query_params: frozenset[str] = frozenset()
    bearer_auth: bool = False
    """The OpenAPI document declares the bearer scheme (services.gateway.guard enforces it)."""
    public_paths: frozenset[str] = frozenset()
    """/api paths served without a token (OpenAPI: `security: []`)."""
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at shutdown: open event streams end, /readyz answers 503."""
    web: WebApp = field(default_factory=WebApp)
    """The web app at /, its static files and /docs (services.gateway.webapp)."""


def create_app(gateway: Gateway, middleware: Sequence[Middleware] = ()) -> Starlette:
    document = build_openapi(
        gateway.table, bearer_auth=gateway.bearer_auth, public_paths=gateway.public_paths
    )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        if gateway.closing.is_set():
            return JSONResponse({"status": "shutting_down", "backends": []}, status_code=503)
        checks = await gateway.backends.check_all(gateway.readiness_timeout_seconds)
        ready = all(c.serving for c in checks)
        body = {
            "status": "ready" if ready else "not_ready",
            "backends": [c.as_json() for c in checks],
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def docs(request: Request) -> Response:
        return gateway.web.docs()

    async def model_file(request: Request) -> Response:
        try:
            return await _model_file(gateway, request)
        except GatewayError as error:
            return error_response(error)
        except grpc.aio.AioRpcError as error:
            return error_response(from_rpc_error(error))
        except httpx.HTTPError as error:
            logger.warning("%s: the presigned URL did not serve the file: %s", request.url, error)
            return error_response(
                GatewayError(grpc.StatusCode.UNAVAILABLE, "the file store did not serve the file")
            )

    async def transcode(request: Request) -> Response:
        try:
            return await _transcode(gateway, request)
        except GatewayError as error:
            if (
                error.http_status == 404
                and request.method == "GET"
                and is_app_path(request.url.path)
            ):
                return gateway.web.index()  # one of the app's own URLs
            return error_response(error)
        except grpc.aio.AioRpcError as error:
            failure = from_rpc_error(error)
            if failure.http_status >= 500:
                # the client gets the status; the operator needs to know which backend failed
                logger.warning(
                    "%s %s: backend answered %s: %s",
                    request.method,
                    request.url.path,
                    failure.code.name,
                    failure.message,
                    extra={"request_id": request.scope.get("state", {}).get("request_id")},
                )
            return error_response(failure)

    routes = [
        StarletteRoute("/healthz", healthz, methods=["GET"]),
        StarletteRoute("/readyz", readyz, methods=["GET"]),
        StarletteRoute("/openapi.json", openapi, methods=["GET"]),
        StarletteRoute("/docs", docs, methods=["GET"]),
        Mount(STATIC_PREFIX, app=gateway.web.static()),
        StarletteRoute(MODEL_FILE_PATH, model_file, methods=["GET"]),
        StarletteRoute("/{path:path}", transcode, methods=_TRANSCODED_METHODS),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequestIdMiddleware), *middleware],
        exception_handlers={HTTPException: _http_exception, Exception: _internal_error},
    )


async def _transcode(gateway: Gateway, request: Request) -> Response:
    routed = route_of(gateway.table, request.scope)
    if routed.match is None:
        assert routed.error is not None
        raise routed.error
    match = routed.match
    route = match.route
    body = await _read_body(request, gateway.max_body_bytes) if route.body else b""
    http = HttpInput(
        path_params=match.path_params,
        query=_query(request.scope),
        body=body,
        content_type=request.headers.get("content-type", ""),
        headers={k.decode("latin-1").lower(): v for k, v in request.scope["headers"]},
    )
    message = build_request(match, http, ignored_query_params=gateway.ignored_query_params)
    metadata = _metadata(request)
    if route.server_streaming:
        return await EventStream.open(gateway, route, message, metadata)
    response = await gateway.backends.unary(
        route, message, metadata=metadata, deadline=gateway.deadline_seconds
    )
    return JSONResponse(to_json(response))


MODEL_FILE_PATH = "/api/projects/{project}/files/{format}"
"""The bytes of one output file, read through its presigned URL (services.gateway.webapp)."""


async def _model_file(gateway: Gateway, request: Request) -> Response:
    project = request.path_params["project"]
    file_format = request.path_params["format"]
    raw_version = request.query_params.get("version", "0") or "0"
    if not raw_version.isdigit() or len(raw_version) > 9:
        raise invalid_argument("version: must be a whole number")
    route = _route_of(gateway.table, "cadpipe.v1.ArtifactService.GetDownloadUrl")
    message = download_request(project, file_format, int(raw_version))
    reply = await gateway.backends.unary(
        route, message, metadata=_metadata(request), deadline=gateway.deadline_seconds
    )
    assert isinstance(reply, artifacts_pb2.DownloadUrl)
    return await stream_url(reply.url, reply.file.name, immutable=int(raw_version) > 0)


def _route_of(table: RouteTable, full_method: str) -> Route:
    for route in table:
        if route.full_method == full_method:
            return route
    raise GatewayError(grpc.StatusCode.UNIMPLEMENTED, f"{full_method} is not served here")


def error_response(error: GatewayError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.http_status, headers=error.headers or None)


def _query(scope: Scope) -> list[tuple[str, str]]:
    text = scope.get("query_string", b"").decode("latin-1")
    try:
        return parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=_MAX_QUERY_FIELDS,
        )
    except UnicodeDecodeError:
        raise invalid_argument("query string is not valid UTF-8") from None
    except ValueError as error:
        raise invalid_argument(f"query string: {error}") from None


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be larger than `limit`."""
    too_large = GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT, f"request body is larger than {limit} bytes", http=413
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise GatewayError(
            grpc.StatusCode.CANCELLED, "client went away while sending the body"
        ) from None
    return b"".join(chunks)


def _metadata(request: Request) -> list[tuple[str, str]]:
    state = request.scope.get("state", {})
    metadata = [(REQUEST_ID_HEADER, str(state.get("request_id", "")))]
    metadata.extend(state.get(FORWARD_METADATA, ()))
    return metadata


class EventStream(Response):
    """A server-streaming call as Server-Sent Events. It ends when the backend ends the stream
    (after an `event: error` frame if it failed), when the client goes away, or at shutdown;
    in every case the gRPC call is cancelled, so the backend stops working for no one."""

    media_type = sse.CONTENT_TYPE

    def __init__(
        self, call: grpc.aio.UnaryStreamCall[Any, Any], keepalive: float, closing: asyncio.Event
    ):
        # not Response.__init__: it would declare Content-Length: 0
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", sse.CONTENT_TYPE.encode()),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
        ]
        self.call = call
        self.keepalive = keepalive
        self.closing = closing

    @classmethod
    async def open(
        cls, gateway: Gateway, route: Route, message: Message, metadata: Metadata
    ) -> EventStream:
        """Starts the call and waits for the backend's first answer, so that a refusal (bad
        project, backend down) is an HTTP error status rather than a 200 with an error frame.
        A backend that says nothing within the deadline gets its stream opened all the same
        (a later failure is then an `event: error`)."""
        call = gateway.backends.server_stream(route, message, metadata=metadata)
        try:
            # not wait_for: cancelling initial_metadata() would cancel the call
            answered = asyncio.ensure_future(call.initial_metadata())
            answered.add_done_callback(_retrieve)
            await asyncio.wait({answered}, timeout=gateway.deadline_seconds)
            if call.done() and await call.code() != grpc.StatusCode.OK:
                await call.read()  # raises the call's AioRpcError, details and all
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        except BaseException:
            call.cancel()
            raise
        return cls(call, gateway.keepalive_seconds, gateway.closing)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        pump = asyncio.create_task(self._pump(send), name="sse-pump")
        gone = asyncio.create_task(_client_gone(receive), name="sse-disconnect")
        closing = asyncio.create_task(self.closing.wait(), name="sse-closing")
        try:
            await asyncio.wait({pump, gone, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.call.cancel()
            for task in (pump, gone, closing):
                task.cancel()
            await asyncio.gather(pump, gone, closing, return_exceptions=True)
        if pump.done() and not pump.cancelled() and pump.exception() is not None:
            logger.error("event stream failed", exc_info=pump.exception())
        # ends the response; a server whose client has gone ignores it (ASGI 2.4: OSError)
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, send: Send) -> None:
        read: asyncio.Future[Any] = asyncio.ensure_future(self.call.read())
        try:
            while True:
                # wait without cancelling the read: cancelling it would cancel the call
                done, _ = await asyncio.wait({read}, timeout=self.keepalive)
                if not done:
                    await send(
                        {"type": "http.response.body", "body": sse.KEEPALIVE, "more_body": True}
                    )
                    continue
                try:
                    item = read.result()
                except grpc.aio.AioRpcError as error:
                    frame = sse.error_frame(from_rpc_error(error).body())
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                    return
                if item is grpc.aio.EOF:
                    return
                frame = sse.data_frame(to_json(item))
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                read = asyncio.ensure_future(self.call.read())
        finally:
            read.cancel()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Marks a background future's outcome as seen (the call's own status reports it)."""
    if not future.cancelled():
        future.exception()


async def _client_gone(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class RequestIdMiddleware:
    """Takes the caller's X-Request-Id (or makes one), hands it to the gRPC calls through
    scope state, returns it on every response, and logs one line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: AsgiMessage) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message).append("X-Request-Id", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logger.info(
                "%s %s %d %.1fms",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
                extra={"request_id": request_id, "http_status": status},
            )


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED}.get(
        exc.status_code, grpc.StatusCode.INVALID_ARGUMENT
    )
    error = GatewayError(
        code, f"{request.method} {request.url.path}: {exc.detail}", http=exc.status_code
    )
    return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    error = GatewayError(grpc.StatusCode.INTERNAL, "internal error in the gateway")
    return error_response(error)
