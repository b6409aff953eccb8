"""Structured JSON logs, configured once in each service's main().

Fields that hold for a whole request or job (request_id, project, version, ...) live in a
context variable: `with log_context(request_id=..., project=...)` around the work, and every
line logged inside it, in this task, in tasks it starts and in threads run by
asyncio.to_thread (which copy the context), carries them. The gRPC server interceptor
(cadpipe.grpc_observe) sets them from the call's metadata and request; NATS consumers set them
from the event and its X-Request-Id header.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

REQUEST_ID = "request_id"
REQUEST_ID_HEADER = "x-request-id"
"""The gRPC metadata key and NATS header (case-insensitive there) that carry the request id."""

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "cadpipe_log_context", default=MappingProxyType({})
)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Adds fields (None and "" left out) to every log line written inside the block."""
    added = {k: v for k, v in fields.items() if v is not None and v != ""}
    token = _context.set({**_context.get(), **added})
    try:
        yield
    finally:
        try:
            _context.reset(token)
        except ValueError:
            # the block ended in another context than it began (an async generator closed
            # by the event loop's finaliser): that context never saw the fields anyway
            pass


def current_log_context() -> dict[str, Any]:
    return dict(_context.get())


def current_request_id() -> str:
    return str(_context.get().get(REQUEST_ID, ""))


class ContextFilter(logging.Filter):
    """Copies the log context onto each record (a field given with `extra=` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `extra=` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """For a person at a terminal: time, service, level, logger, message, then the log
    context and `extra=` fields as key=value."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(
            f"{key}={value}"
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_") and key != "color_message"
        )
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        return f"{head} [{fields}]{newline}{rest}"


def configure_logging(service: str, *, default_format: str = "json") -> None:
    """JSON on stderr at LOG_LEVEL (default INFO); LOG_FORMAT=text for humans. Both are read
    as settings (cadpipe.settings.LoggingSettings): a bad value is logged, in JSON at INFO,
    like any invalid setting, and the process exits with EX_CONFIG. default_format applies
    when LOG_FORMAT is not set (`make run` asks for text when stderr is a terminal)."""
    from cadpipe.settings import LoggingSettings, load_settings

    _install(service, "INFO", "json")
    how = load_settings(LoggingSettings, service)
    fmt = how.log_format if "log_format" in how.model_fields_set else default_format
    _install(service, how.log_level, fmt)


def _install(service: str, level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(TextFormatter(service) if fmt == "text" else JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "nats", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
