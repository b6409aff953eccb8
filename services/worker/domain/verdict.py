"""How a finished sandbox run is judged: its outcome becomes a verdict (status, reason, error)."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from cadpipe import layout
from services.worker import sandbox_runner as runner
from services.worker.domain.job import Limits, human_bytes, printable
from services.worker.domain.outputs import OutputPlan


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
