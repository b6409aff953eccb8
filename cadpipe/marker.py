"""The processed marker (processed/{p}/{p}_v{N}.py.done): the worker's word that version N is
finished, and what it produced. Written last, by our worker, for success and failure alike.

Other workers following the older contract write an empty marker, meaning success; parse()
returns a Marker with status "completed" and no outputs for those, and the reader lists the
outputs from output/{p}/v{N}/ itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SCHEMA = "cadpipe.marker/1"
MarkerStatus = Literal["completed", "error"]
ExitReason = Literal[
    "ok",
    "exception",
    "timeout",
    "limit_exceeded",
    "killed",
    "no_outputs",
    "worker_error",
    "redelivery_limit",
]


@dataclass(frozen=True)
class MarkerOutput:
    key: str
    name: str
    format: str
    size_bytes: int
    sha256: str
    content_type: str


@dataclass(frozen=True)
class Marker:
    status: MarkerStatus
    outputs: tuple[MarkerOutput, ...] = ()
    log_key: str = ""
    report_key: str = ""
    started_at: str = ""  # ISO 8601, UTC
    finished_at: str = ""
    duration_seconds: float = 0.0
    freecad_version: str = ""
    exit_reason: str = ""
    error: str = ""
    attempts: int = 0
    project: str = ""
    version: int = 0
    legacy: bool = field(default=False, compare=False)
    """True for an empty marker from a worker of the older contract."""

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"schema": SCHEMA, **asdict(self)}
        body.pop("legacy")
        return json.dumps(body, indent=2, sort_keys=True).encode()


def parse(body: bytes) -> Marker:
    """Reads a marker body. Empty (or whitespace) means success under the older contract; a body
    that is not our JSON is treated the same way, as the older contract says nothing of bodies."""
    if not body.strip():
        return Marker(status="completed", legacy=True)
    try:
        data = json.loads(body)
    except ValueError:
        return Marker(status="completed", legacy=True)
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return Marker(status="completed", legacy=True)
    status: MarkerStatus = "error" if data.get("status") == "error" else "completed"
    outputs = tuple(
        MarkerOutput(
            key=str(o.get("key", "")),
            name=str(o.get("name", "")),
            format=str(o.get("format", "")),
            size_bytes=int(o.get("size_bytes", 0)),
            sha256=str(o.get("sha256", "")),
            content_type=str(o.get("content_type", "")),
        )
        for o in data.get("outputs", [])
        if isinstance(o, dict)
    )
    return Marker(
        status=status,
        outputs=outputs,
        log_key=str(data.get("log_key", "")),
        report_key=str(data.get("report_key", "")),
        started_at=str(data.get("started_at", "")),
        finished_at=str(data.get("finished_at", "")),
        duration_seconds=float(data.get("duration_seconds", 0.0)),
        freecad_version=str(data.get("freecad_version", "")),
        exit_reason=str(data.get("exit_reason", "")),
        error=str(data.get("error", "")),
        attempts=int(data.get("attempts", 0)),
        project=str(data.get("project", "")),
        version=int(data.get("version", 0)),
    )
