"""The worker's rules, as plain functions: what an uploaded event asks for, how a finished sandbox
run is judged, which produced files become outputs and under which names, what the log and the
geometry report say. No I/O here."""

from __future__ import annotations

import math
import re
import signal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cadpipe import layout
from services.worker import sandbox_runner as runner

# --- the job -------------------------------------------------------------------------------


class InvalidJob(ValueError):
    """An uploaded event that names no runnable script (it is dropped, not retried)."""


@dataclass(frozen=True)
class Job:
    project: str
    version: int
    script_key: str
    sha256: str = ""

    @property
    def name(self) -> str:
        return f"{self.project} v{self.version}"


def job_from_event(project: str, version: int, key: str, sha256: str) -> Job:
    """The job an uploaded event asks for; the script key is rebuilt from project and version,
    never taken from the event, so an event cannot point the worker at another object."""
    try:
        layout.check_project(project)
        expected = layout.script_key(project, version)
    except ValueError as error:
        raise InvalidJob(str(error)) from error
    if key and key != expected:
        raise InvalidJob(f"event key {key!r} is not the script of {project} v{version}")
    if sha256 and not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise InvalidJob(f"event sha256 {sha256!r} is not a SHA-256 hex digest")
    return Job(project=project, version=version, script_key=expected, sha256=sha256)


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float
    address_space: int
    cpu_seconds: int
    processes: int
    file_size: int
    open_files: int

    def as_request(self) -> dict[str, int]:
        return {
            "address_space": self.address_space,
            "cpu_seconds": self.cpu_seconds,
            "processes": self.processes,
            "file_size": self.file_size,
            "open_files": self.open_files,
        }

    def describe(self) -> str:
        return (
            f"{self.timeout_seconds:g} s wall clock, {self.cpu_seconds} s CPU, "
            f"{human_bytes(self.address_space)} address space, {self.processes} processes, "
            f"{human_bytes(self.file_size)} per file, {self.open_files} open files"
        )


@dataclass(frozen=True)
class Isolation:
    """What the sandbox could put in place on this machine."""

    pid_namespace: bool
    mount_namespace: bool
    network_namespace: bool
    drop_privileges: bool
    pids_cgroup: bool
    ipc_namespace: bool = True
    seccomp: bool = True
    memory_cgroup: bool = False

    @property
    def complete(self) -> bool:
        return (
            self.pid_namespace
            and self.mount_namespace
            and self.network_namespace
            and (self.drop_privileges)
            and self.ipc_namespace
            and self.seccomp
        )

    def missing(self) -> list[str]:
        wanted = {
            "PID namespace": self.pid_namespace,
            "mount namespace (read-only machine, private /tmp)": self.mount_namespace,
            "network namespace (no network)": self.network_namespace,
            "unprivileged uid": self.drop_privileges,
            "IPC namespace (System V shared memory of its own)": self.ipc_namespace,
            "seccomp filter": self.seccomp,
        }
        return [name for name, present in wanted.items() if not present]

    def describe(self, uid: int | None = None) -> str:
        parts = [
            name
            for name, present in (
                ("pid", self.pid_namespace),
                ("mount", self.mount_namespace),
                ("network", self.network_namespace),
                ("ipc", self.ipc_namespace),
            )
            if present
        ]
        text = f"namespaces: {'+'.join(parts) or 'none'}"
        if self.seccomp:
            text += "; seccomp"
        if not self.drop_privileges:
            text += "; NO uid switch (runs as the worker)"
        else:
            text += "; own uid" + (f" {uid}" if uid is not None else "")
        if self.pids_cgroup:
            text += "; pids cgroup"
        if self.memory_cgroup:
            text += "; memory cgroup"
        return text


# --- judging a run -------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxOutcome:
    """How the job process ended, as the sandbox's supervisor saw it."""

    timed_out: bool = False
    exit_code: int | None = None
    signal: int | None = None
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    max_rss_kb: int = 0
    failure: str = ""
    """Set when the supervisor itself failed; the script may not have run."""
    script_started: bool = True
    """The job said, through a pipe the script cannot write, that set-up ended and the script
    starts. Without it any end is the sandbox's failure; with it, never."""
    memory_cgroup_oom: bool = False
    """The job's memory cgroup counted an OOM kill (read by the supervisor, not the job)."""


@dataclass(frozen=True)
class Verdict:
    exit_reason: str
    """One of cadpipe.marker.ExitReason."""
    error: str = ""
    """One line for humans; empty when the run succeeded."""

    @property
    def ok(self) -> bool:
        return self.exit_reason == "ok"


_LIMIT_EXIT_CODES = {
    runner.EXIT_MEMORY: "memory",
    runner.EXIT_FILE_SIZE: "file size",
    runner.EXIT_PROCESSES: "process",
    runner.EXIT_OPEN_FILES: "open files",
}


def _limit_value(kind: str, limits: Limits) -> str:
    return {
        "memory": f"{human_bytes(limits.address_space)} address space",
        "file size": f"{human_bytes(limits.file_size)} per file",
        "process": f"{limits.processes} processes and threads",
        "open files": f"{limits.open_files} open files",
        "CPU time": f"{limits.cpu_seconds} s",
    }[kind]


def judge(outcome: SandboxOutcome, limits: Limits, stderr: str) -> Verdict:
    """Turns the way the job process ended into an exit reason and a one-line error."""
    if outcome.failure:
        return Verdict("worker_error", f"the sandbox failed: {outcome.failure}")
    if outcome.timed_out:
        return Verdict(
            "timeout",
            f"the script ran longer than {limits.timeout_seconds:g} s and was stopped",
        )
    if not outcome.script_started:
        # Decided by the supervisor's own report: the job never said its script starts, so
        # whatever status it ended with, the sandbox failed it. (With that word said, no exit
        # status the script picks, os._exit(120) included, makes its failure the worker's.)
        return Verdict(
            "worker_error",
            "the sandbox could not be set up: " + (last_exception_line(stderr) or "see the log"),
        )
    if outcome.signal is not None:
        sig = outcome.signal
        # The job's CPU time, measured by the supervisor, must bear a CPU-limit signal out: a
        # script that sends itself SIGXCPU has not hit the limit.
        cpu_spent = outcome.cpu_seconds >= limits.cpu_seconds - 0.5
        if (sig == signal.SIGXCPU or sig == signal.SIGKILL) and cpu_spent:
            return Verdict(
                "limit_exceeded",
                f"CPU time limit exceeded ({_limit_value('CPU time', limits)})",
            )
        if sig == signal.SIGXFSZ:
            return Verdict(
                "limit_exceeded", f"file size limit exceeded ({_limit_value('file size', limits)})"
            )
        name = _signal_name(sig)
        if sig == signal.SIGKILL and outcome.memory_cgroup_oom:
            return Verdict(
                "limit_exceeded",
                f"memory limit exceeded ({_limit_value('memory', limits)}, the job's memory "
                "cgroup)",
            )
        if sig == signal.SIGKILL:
            return Verdict("killed", f"the job was killed ({name}), most likely out of memory")
        return Verdict("killed", f"FreeCAD crashed ({name})")
    code = outcome.exit_code
    if code == runner.EXIT_OK:
        return Verdict("ok")
    if code in _LIMIT_EXIT_CODES:
        kind = _LIMIT_EXIT_CODES[code]
        detail = last_exception_line(stderr)
        text = f"{kind} limit exceeded ({_limit_value(kind, limits)})"
        return Verdict("limit_exceeded", f"{text}: {detail}" if detail else text)
    if code == runner.EXIT_EXCEPTION:
        return Verdict("exception", last_exception_line(stderr) or "the script failed")
    return Verdict("exception", f"the script exited with status {code}")


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def last_exception_line(stderr: str) -> str:
    """The line the last Python traceback ends with ("ValueError: ..."); without a traceback
    (a SyntaxError, the sys.exit note), the last line that is not indented."""
    lines = stderr.splitlines()
    start = max((i for i, line in enumerate(lines) if line.startswith("Traceback ")), default=-1)
    for line in lines[start + 1 :] if start >= 0 else reversed(lines):
        if line and not line[0].isspace() and not line.startswith("cadpipe:"):
            return line[:500]
    return ""


def no_outputs_verdict() -> Verdict:
    formats = ", ".join(layout.OUTPUT_FORMATS)
    return Verdict(
        "no_outputs",
        f"the script saved no file in a recognised format ({formats}) into FREECAD_OUTPUT",
    )


# --- outputs -------------------------------------------------------------------------------


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


def outputs_over_total(plan: OutputPlan, max_total: int) -> Verdict | None:
    """limit_exceeded, naming the file that takes the outputs past max_total bytes (their
    sizes as stored, i.e. as read: a sparse file counts whole), or None if they fit."""
    total = 0
    for output in plan.outputs:
        total += output.size
        if total > max_total:
            return Verdict(
                "limit_exceeded",
                f"output size limit exceeded ({human_bytes(max_total)} for all outputs of a "
                f"version): {printable(output.path)} ({human_bytes(output.size)}) takes them "
                f"to {human_bytes(total)}",
            )
    return None


# --- the geometry report -------------------------------------------------------------------

REPORT_SCHEMA = "cadpipe.report/1"
_BOX_FIELDS = ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _clean_solid(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    box = raw.get("bounding_box")
    solid: dict[str, Any] = {
        "valid": raw.get("valid") is True,
        "volume": _number(raw.get("volume")),
        "area": _number(raw.get("area")),
        "bounding_box": {k: _number(box.get(k)) for k in _BOX_FIELDS}
        if isinstance(box, Mapping)
        else None,
        "faces": _count(raw.get("faces")),
    }
    if isinstance(raw.get("object"), str):
        solid["object"] = raw["object"][:200]
    return solid


def _clean_file(raw: Mapping[str, Any], output: PlannedOutput, max_solids: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": output.name, "key": output.key, "format": output.format}
    if isinstance(raw.get("error"), str):
        entry["error"] = raw["error"][:500]
    kind = raw.get("kind")
    if kind in ("brep", "document"):
        entry["kind"] = kind
        solids = raw.get("solids")
        cleaned = (
            [s for s in map(_clean_solid, solids[:max_solids]) if s]
            if isinstance(solids, list)
            else []
        )
        entry["solids"] = cleaned
        for counter in ("shells", "faces", "objects"):
            if _count(raw.get(counter)) is not None:
                entry[counter] = raw[counter]
        if isinstance(raw.get("valid"), bool):
            entry["valid"] = raw["valid"]
    elif kind == "mesh":
        entry["kind"] = "mesh"
        entry["triangles"] = _count(raw.get("triangles"))
        entry["points"] = _count(raw.get("points"))
        entry["closed"] = raw.get("closed") is True
        entry["area"] = _number(raw.get("area"))
        if _number(raw.get("volume")) is not None:
            entry["volume"] = _number(raw.get("volume"))
    return entry


def finish_report(
    raw: Any, plan: OutputPlan, *, project: str, version: int, max_solids: int = 1000
) -> dict[str, Any]:
    """The report.json stored next to the outputs. The sandbox measured the files (it has
    FreeCAD); since the script ran in that same process, its numbers are taken as data to
    check, never trusted for shape: only known fields of the expected types are kept, and only
    for files that became outputs, named as stored."""
    by_path = {o.path: o for o in plan.outputs}
    files: list[dict[str, Any]] = []
    freecad_version = ""
    if isinstance(raw, Mapping):
        if isinstance(raw.get("freecad_version"), str):
            freecad_version = raw["freecad_version"][:40]
        for item in raw.get("files", []) if isinstance(raw.get("files"), list) else []:
            if isinstance(item, Mapping) and isinstance(item.get("path"), str) and (
                item["path"] in by_path
            ):
                files.append(_clean_file(item, by_path.pop(item["path"]), max_solids))
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "project": project,
        "version": version,
        "freecad_version": freecad_version,
        "files": sorted(files, key=lambda f: f["name"]),
    }
    if by_path:
        report["not_measured"] = sorted(o.name for o in by_path.values())
    solids = [s for f in files for s in f.get("solids", [])]
    report["all_solids_valid"] = bool(solids) and all(s["valid"] for s in solids)
    return report


# --- the log -------------------------------------------------------------------------------

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


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def printable(text: str) -> str:
    """text as one line of the log's header: control characters, line and paragraph
    separators, and the bytes of a file name that are not UTF-8 (kept by os.scandir as lone
    surrogates) written as Python escapes; so a job cannot forge a header line, and the log
    always encodes."""

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the original byte
            return f"\\x{code - 0xDC00:02x}"
        return char.encode("unicode_escape").decode("ascii")

    return _UNPRINTABLE.sub(escape, text)


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1024
    return f"{n} GiB"


def cut(head: str, tail: str, total: int, kept: int) -> str:
    """The text of a stream too long to keep whole: its head, a note, its tail."""
    if total <= kept:
        return head + tail
    return f"{head}\n[... {total - kept} bytes cut by the worker ...]\n{tail}"
