"""Server-Sent Events framing (https://html.spec.whatwg.org/multipage/server-sent-events.html).

Each message is one `data:` line of compact JSON (json.dumps escapes newlines, so one line
always holds it) and a blank line; unnamed, so EventSource's `onmessage` receives it. A failure
is `event: error` with the error body as data. Comments (`: keepalive`) keep proxies from
closing an idle connection.
"""

from __future__ import annotations

import json
from typing import Any

CONTENT_TYPE = "text/event-stream; charset=utf-8"
KEEPALIVE = b": keepalive\n\n"


def data_frame(payload: dict[str, Any], event: str | None = None) -> bytes:
    lines = []
    if event:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def error_frame(body: dict[str, Any]) -> bytes:
    return data_frame(body, event="error")
