"""A real HTTP server on 127.0.0.1 that speaks the OpenAI Chat Completions protocol, answering
from a script the test writes, and recording every request it received.

    with FakeOpenAI([Reply.http(429, headers={"Retry-After": "2"}), Reply.answer(SCRIPT)]) as api:
        writer = OpenAIWriter(base_url=api.base_url, model="m", api_key="k")
        ...
        assert api.requests[0].json["model"] == "m"

Replies are used in order, one per request. When they run out, `then` answers (a Reply, or a
function of the request for end-to-end tests that answer from what was asked); without `then`
the server answers HTTP 500 with a body saying the script ran out, so a test that makes more
calls than it planned fails visibly.

It runs in a thread (http.server), so it serves async and sync clients alike, from any event
loop.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

JsonBody = dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    body: a dict (sent as JSON), str or bytes (sent as they are: malformed JSON, HTML error
    pages); chunks: a streamed answer instead (each dict becomes one SSE `data:` event, each
    str is sent as it is, and `data: [DONE]` follows unless done=False); delay_seconds: wait
    before the status line (timeouts); chunk_delay_seconds: wait before each chunk."""

    status: int = 200
    body: JsonBody | str | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: Sequence[JsonBody | str] | None = None
    done: bool = True
    delay_seconds: float = 0.0
    chunk_delay_seconds: float = 0.0

    @classmethod
    def answer(cls, content: str | None, **kwargs: Any) -> Reply:
        """A 200 with a complete chat.completion (see completion_body for the keywords)."""
        return cls(body=completion_body(content, **kwargs))

    @classmethod
    def streamed(cls, content: str, **kwargs: Any) -> Reply:
        """A 200 with the content streamed in chunks (see stream_chunks for the keywords)."""
        return cls(
            chunks=stream_chunks(content, **kwargs),
            headers={"Content-Type": "text/event-stream"},
        )

    @classmethod
    def http(
        cls,
        status: int,
        message: str = "",
        *,
        headers: dict[str, str] | None = None,
        code: str | None = None,
        delay_seconds: float = 0.0,
    ) -> Reply:
        """An error answer with the OpenAI error body ({"error": {"message", "type", "code"}})."""
        error: JsonBody = {"message": message or f"fake error {status}", "type": "error"}
        if code is not None:
            error["code"] = code
        return cls(
            status=status, body={"error": error}, headers=headers or {}, delay_seconds=delay_seconds
        )


def completion_body(
    content: str | None,
    *,
    model: str = "fake-model",
    prompt_tokens: int = 11,
    completion_tokens: int = 22,
    cost: float | None = None,
    refusal: str | None = None,
    finish_reason: str = "stop",
) -> JsonBody:
    """A chat.completion as OpenAI sends it; cost: OpenRouter's usage.cost."""
    usage: JsonBody = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cost is not None:
        usage["cost"] = cost
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage,
    }


def stream_chunks(
    content: str,
    *,
    model: str = "fake-model",
    pieces: int = 4,
    prompt_tokens: int = 11,
    completion_tokens: int = 22,
    cost: float | None = None,
    usage: bool = True,
    finish_reason: str = "stop",
) -> list[JsonBody | str]:
    """chat.completion.chunk events: the role, the content in `pieces` parts, the finish
    reason, then (stream_options.include_usage) a last chunk with no choices and the usage."""

    def chunk(delta: JsonBody, finish: str | None = None) -> JsonBody:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    size = max(1, -(-len(content) // pieces))
    chunks: list[JsonBody | str] = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": content[i : i + size]}) for i in range(0, len(content), size)]
    chunks.append(chunk({}, finish_reason))
    if usage:
        totals: JsonBody = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if cost is not None:
            totals["cost"] = cost
        chunks.append(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [],
                "usage": totals,
            }
        )
    return chunks


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


Answerer = Callable[[ReceivedRequest], Reply]


class FakeOpenAI:
    """The server; a context manager that starts it on a free port and stops it."""

    def __init__(self, replies: Sequence[Reply] = (), *, then: Reply | Answerer | None = None):
        self._replies = list(replies)
        self.then = then
        """What answers once the scripted replies run out; may be changed at any time."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.requests: list[ReceivedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long close() waits for the loop to notice
            name="fake-openai",
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        """Like https://api.openai.com/v1: the client appends /chat/completions."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def add(self, *replies: Reply) -> None:
        """More replies, after those not yet used."""
        with self._lock:
            self._replies.extend(replies)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stopping.set()  # ends the delays of handlers still sleeping
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next(self, request: ReceivedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._replies:
                return self._replies.pop(0)
        then = self.then
        if then is None:
            return Reply.http(500, "fake_openai: no scripted reply left for this request")
        return then if isinstance(then, Reply) else then(request)


def _handler_for(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet in test output
            pass

        def do_GET(self) -> None:
            self._serve(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._serve(self.rfile.read(length))

        def _serve(self, body: bytes) -> None:
            received = ReceivedRequest(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            reply = fake._next(received)
            if reply.delay_seconds and fake._stopping.wait(reply.delay_seconds):
                return
            try:
                if reply.chunks is not None:
                    self._stream(reply)
                else:
                    self._whole(reply)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeouts)
                self.close_connection = True

        def _whole(self, reply: Reply) -> None:
            if isinstance(reply.body, dict):
                payload = json.dumps(reply.body).encode()
                content_type = "application/json"
            else:
                text = reply.body if reply.body is not None else b""
                payload = text.encode() if isinstance(text, str) else text
                content_type = "text/plain"
            self.send_response(reply.status)
            headers = {"Content-Type": content_type, **reply.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _stream(self, reply: Reply) -> None:
            self.send_response(reply.status)
            headers = {"Content-Type": "text/event-stream", **reply.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")  # the end of the body is the end of the stream
            self.end_headers()
            self.close_connection = True
            events = [
                f"data: {json.dumps(c)}\n\n" if isinstance(c, dict) else c
                for c in reply.chunks or ()
            ]
            if reply.done:
                events.append("data: [DONE]\n\n")
            for event in events:
                if reply.chunk_delay_seconds and fake._stopping.wait(reply.chunk_delay_seconds):
                    return
                self.wfile.write(event.encode())
                self.wfile.flush()

    return Handler
