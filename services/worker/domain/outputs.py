"""Which produced files become outputs, and under which names."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cadpipe import layout


@dataclass(frozen=True)
class ProducedFile:
    """A regular file the job left in its output directory."""

    path: str
    """Relative to the output directory, '/'-separated."""
    size: int


@dataclass(frozen=True)
class PlannedOutput:
    path: str
    name: str
    format: str
    content_type: str
    key: str
    size: int


@dataclass(frozen=True)
class OutputPlan:
    outputs: tuple[PlannedOutput, ...]
    ignored: tuple[str, ...] = ()
    """Files left out, each with the reason."""


_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME_CHARS = 120


def safe_name(name: str) -> str:
    """A file name that is safe in a bucket key and a Content-Disposition header: ASCII
    letters, digits, '.', '-', '_'; the extension kept."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    stem = _UNSAFE_NAME_CHARS.sub("_", stem).strip("._") or "output"
    ext = _UNSAFE_NAME_CHARS.sub("", ext)
    stem = stem[: _MAX_NAME_CHARS - len(ext) - 1]
    return f"{stem}.{ext}" if ext else stem


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    stem, dot, ext = name.rpartition(".")
    n = 2
    while True:
        candidate = f"{stem}-{n}{dot}{ext}"
        if candidate not in taken:
            return candidate
        n += 1


def plan_outputs(
    project: str, version: int, files: Iterable[ProducedFile], max_outputs: int
) -> OutputPlan:
    """Every produced file in a recognised format (any case: bracket.STEP is a STEP file)
    becomes an output under output/{project}/v{version}/, keeping its own name; files in
    sub-directories are flattened, and names that meet are told apart (-2, -3, ...), so no
    output overwrites another."""
    planned: list[PlannedOutput] = []
    ignored: list[str] = []
    taken: set[str] = {layout.REPORT_NAME}
    for produced in sorted(files, key=lambda f: (f.path.count("/"), f.path)):
        base = produced.path.rpartition("/")[2]
        fmt = layout.output_format(base)
        if fmt is None:
            ignored.append(f"{produced.path} (not a recognised CAD format)")
            continue
        if len(planned) >= max_outputs:
            ignored.append(f"{produced.path} (more than {max_outputs} outputs)")
            continue
        name = _unique(safe_name(base), taken)
        taken.add(name)
        planned.append(
            PlannedOutput(
                path=produced.path,
                name=name,
                format=fmt,
                content_type=layout.OUTPUT_FORMATS[fmt],
                key=layout.output_key(project, version, name),
                size=produced.size,
            )
        )
    return OutputPlan(tuple(planned), tuple(ignored))
