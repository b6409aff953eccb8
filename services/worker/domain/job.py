"""What an uploaded event asks the worker to do, and the limits and isolation it runs under."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cadpipe import layout


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
