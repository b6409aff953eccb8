"""Starting services as subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_OURS = (
    "LOG_",
    "MONGODB_",
    "S3_",
    "NATS_",
    "GRPC_",
    "HTTP_PORT",
    "METRICS_PORT",
    "SERVICE_TOKEN",
    "AUTH_MODE",
)
"""Variables of cadpipe's settings that the test runner's own environment must not leak in."""


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without cadpipe's own settings, logging in JSON, plus
    `extra`, for starting a service as a subprocess."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith(_OURS)}
    return {**base, "LOG_FORMAT": "json", **extra}
