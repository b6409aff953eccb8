"""What the job's log says, cleaned of FreeCAD's noise and cut to size."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.worker.domain.job import Job, human_bytes, printable
from services.worker.domain.outputs import PlannedOutput
from services.worker.domain.verdict import SandboxOutcome, Verdict

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PROGRESS = re.compile(r"[\t ]*\(\d+ ?%\)[\t ]*")
_BANNER = re.compile(
    r"^(FreeCAD \d+\.\d+.*Libs:.*|\(c\) Juergen Riegel.*|FreeCAD is free and open-source.*"
    r"|FreeCAD wouldn't be possible.*|[ #]*#[ #]*)$"
)
_NOISE = re.compile(r"^(Recompute|saving)\.{3,}$")
"""FreeCAD's progress headings, as its console sequencer prints them."""


def clean_output(text: str) -> str:
    """FreeCAD's start-up banner, colour codes and progress counters ("(42 %)") trimmed; what
    the script printed kept as it was."""
    kept = []
    for line in text.splitlines():
        line = _ANSI.sub("", line)
        if _PROGRESS.search(line):
            line = _PROGRESS.sub("", line)
            if not line.strip() or _NOISE.match(line.strip()):
                continue
        if _BANNER.match(line) or _NOISE.match(line.strip()):
            continue
        kept.append(line)
    cleaned = "\n".join(kept).strip("\n")
    return cleaned + "\n" if cleaned else ""


@dataclass(frozen=True)
class LogRecord:
    job: Job
    status: str
    verdict: Verdict
    attempt: int
    started_at: str
    finished_at: str
    duration_seconds: float
    freecad_version: str
    worker: str
    sandbox: str
    outcome: SandboxOutcome | None = None
    outputs: Sequence[PlannedOutput] = ()
    ignored: Sequence[str] = ()
    stdout: str = ""
    stderr: str = ""
    notes: Sequence[str] = field(default_factory=tuple)


def render_log(record: LogRecord) -> str:
    """The log stored under logs/: a header a person reads first, then stdout and stderr."""
    run = ""
    if record.outcome is not None:
        o = record.outcome
        run = (
            f" (script {o.wall_seconds:.3f} s, CPU {o.cpu_seconds:.3f} s, "
            f"peak memory {human_bytes(o.max_rss_kb * 1024)})"
        )
    header = [
        "cadpipe FreeCAD worker log",
        f"project:      {record.job.project}",
        f"version:      {record.job.version}",
        f"status:       {record.status}",
        f"exit reason:  {record.verdict.exit_reason}",
        f"error:        {printable(record.verdict.error) or '-'}",
        f"attempt:      {record.attempt}",
        f"started at:   {record.started_at}",
        f"finished at:  {record.finished_at}",
        f"duration:     {record.duration_seconds:.3f} s{run}",
        f"FreeCAD:      {record.freecad_version or 'unknown'}",
        f"worker:       {record.worker}",
        f"sandbox:      {record.sandbox}",
    ]
    if record.outputs:
        header.append("outputs:")
        header += [f"  {printable(o.name)} ({o.format}, {o.size} bytes)" for o in record.outputs]
    if record.ignored:
        header.append("not stored:")
        header += [f"  {printable(line)}" for line in record.ignored]
    header += [f"note:         {printable(note)}" for note in record.notes]
    body = [
        "",
        "===== stdout =====",
        clean_output(record.stdout).rstrip("\n"),
        "===== stderr =====",
        clean_output(record.stderr).rstrip("\n"),
        "",
    ]
    return "\n".join(header + body)


def cut(head: str, tail: str, total: int, kept: int) -> str:
    """The text of a stream too long to keep whole: its head, a note, its tail."""
    if total <= kept:
        return head + tail
    return f"{head}\n[... {total - kept} bytes cut by the worker ...]\n{tail}"
