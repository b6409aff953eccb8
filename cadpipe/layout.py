"""The bucket contract, written once: building and parsing every key cadpipe reads or writes.

    input/{project}/{project}_v{N}.py                          the script, immutable
    output/{project}/v{N}/{name}.{ext}                          outputs of version N only
    logs/{project}/{project}_v{N}_{info|error}_{YYYYmmdd_HHMMSS}.log
    processed/{project}/{project}_v{N}.py.done                  marker: version N is finished
    started/{project}/{project}_v{N}.json                       who took version N first: a
                                                                worker's start, or the queue
                                                                limit's expiry (cadpipe/started.py)

Pure functions, no I/O. A project name can never leave its prefix: it is checked against
PROJECT_PATTERN before any key is built from it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

PROJECT_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""ASCII letters, digits, '-' and '_', 1 to 64 characters (no dots, slashes or look-alikes)."""

OUTPUT_FORMATS: dict[str, str] = {
    "fcstd": "application/vnd.freecad.fcstd",
    "step": "model/step",
    "stl": "model/stl",
    "obj": "model/obj",
    "iges": "model/iges",
}
"""Recognised output formats (lower-case extension) and the content type each is stored with."""

FORMAT_ALIASES = {"stp": "step", "igs": "iges"}

SCRIPT_CONTENT_TYPE = "text/x-python"
LOG_CONTENT_TYPE = "text/plain; charset=utf-8"
REPORT_NAME = "report.json"

INPUT_PREFIX = "input/"
OUTPUT_PREFIX = "output/"
LOGS_PREFIX = "logs/"
PROCESSED_PREFIX = "processed/"
STARTED_PREFIX = "started/"
PREFIXES = (INPUT_PREFIX, OUTPUT_PREFIX, LOGS_PREFIX, PROCESSED_PREFIX, STARTED_PREFIX)

LogLevel = Literal["info", "error"]
_LOG_TIME = "%Y%m%d_%H%M%S"


class InvalidProject(ValueError):
    """The project name does not match PROJECT_PATTERN."""


def check_project(project: str) -> str:
    """Returns the project name unchanged, or raises InvalidProject saying what is wrong."""
    if not project:
        raise InvalidProject("project name is empty")
    if len(project) > 64:
        raise InvalidProject(f"project name is {len(project)} characters long; at most 64 allowed")
    if not PROJECT_PATTERN.fullmatch(project):
        raise InvalidProject(
            f"project name may hold only ASCII letters, digits, '-' and '_' (got {project!r})"
        )
    return project


def _check_version(version: int) -> int:
    if version < 1:
        raise ValueError(f"version must be 1 or more, got {version}")
    return version


# --- input ---------------------------------------------------------------------------------


def project_input_prefix(project: str) -> str:
    return f"{INPUT_PREFIX}{check_project(project)}/"


def script_key(project: str, version: int) -> str:
    return f"{project_input_prefix(project)}{project}_v{_check_version(version)}.py"


def parse_script_key(key: str) -> tuple[str, int] | None:
    """(project, version) for a key built by script_key, else None."""
    m = re.fullmatch(r"input/([A-Za-z0-9_-]{1,64})/\1_v([1-9][0-9]*)\.py", key)
    return (m.group(1), int(m.group(2))) if m else None


# --- output --------------------------------------------------------------------------------


def output_prefix(project: str, version: int) -> str:
    return f"{OUTPUT_PREFIX}{check_project(project)}/v{_check_version(version)}/"


def output_key(project: str, version: int, name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid output file name {name!r}")
    return output_prefix(project, version) + name


def output_format(name: str) -> str | None:
    """The recognised format of an output file name (case-insensitive), else None."""
    _, dot, ext = name.rpartition(".")
    if not dot:
        return None
    ext = FORMAT_ALIASES.get(ext.lower(), ext.lower())
    return ext if ext in OUTPUT_FORMATS else None


# --- logs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogName:
    project: str
    version: int
    level: LogLevel
    written_at: dt.datetime


def logs_prefix(project: str) -> str:
    return f"{LOGS_PREFIX}{check_project(project)}/"


def version_logs_prefix(project: str, version: int) -> str:
    """Prefix of every log of one version (both levels)."""
    return f"{logs_prefix(project)}{project}_v{_check_version(version)}_"


def log_key(project: str, version: int, level: LogLevel, written_at: dt.datetime) -> str:
    stamp = written_at.astimezone(dt.UTC).strftime(_LOG_TIME)
    return f"{version_logs_prefix(project, version)}{level}_{stamp}.log"


def parse_log_key(key: str) -> LogName | None:
    m = re.fullmatch(
        r"logs/([A-Za-z0-9_-]{1,64})/\1_v([1-9][0-9]*)_(info|error)_(\d{8}_\d{6})\.log", key
    )
    if not m:
        return None
    written_at = dt.datetime.strptime(m.group(4), _LOG_TIME).replace(tzinfo=dt.UTC)
    level: LogLevel = "info" if m.group(3) == "info" else "error"
    return LogName(m.group(1), int(m.group(2)), level, written_at)


# --- processed marker ----------------------------------------------------------------------


def marker_key(project: str, version: int) -> str:
    return (
        f"{PROCESSED_PREFIX}{check_project(project)}/{project}_v{_check_version(version)}.py.done"
    )


def parse_marker_key(key: str) -> tuple[str, int] | None:
    m = re.fullmatch(r"processed/([A-Za-z0-9_-]{1,64})/\1_v([1-9][0-9]*)\.py\.done", key)
    return (m.group(1), int(m.group(2))) if m else None


# --- started record ------------------------------------------------------------------------


def started_key(project: str, version: int) -> str:
    """Written once (If-None-Match: *) by whoever takes the version first: a worker starting it,
    or the watcher ending it for waiting too long in the queue (cadpipe/started.py)."""
    return f"{STARTED_PREFIX}{check_project(project)}/{project}_v{_check_version(version)}.json"


def parse_started_key(key: str) -> tuple[str, int] | None:
    m = re.fullmatch(r"started/([A-Za-z0-9_-]{1,64})/\1_v([1-9][0-9]*)\.json", key)
    return (m.group(1), int(m.group(2))) if m else None
