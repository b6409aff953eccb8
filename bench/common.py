"""Helpers the benchmarks share: percentiles and a fresh moto + nats-server + bucket."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cadpipe.adapters import s3
from cadpipe.devstack import MotoS3, NatsServer, free_port, wait_for_port
from cadpipe.settings import S3Settings


def percentile(values: list[float], q: float) -> float:
    """q in [0, 100]; linear interpolation between closest ranks."""
    if len(values) == 1:
        return values[0]
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
        if q < 100
        else max(values)
    )


def summary(label: str, latencies: list[float], wall: float | None = None) -> str:
    ms = [v * 1000 for v in latencies]
    text = f"{label:<50} n={len(ms):<4}" + "".join(
        f"  p{q}={percentile(ms, q):8.1f} ms" for q in (50, 95, 99)
    )
    if wall:
        text += f"  {len(ms) / wall:8.1f} /s"
    return text


@dataclass(frozen=True)
class Backends:
    moto: MotoS3
    nats: NatsServer
    s3_settings: S3Settings
    bucket: s3.Bucket


@contextmanager
def backends() -> Iterator[Backends]:
    with MotoS3() as moto, NatsServer() as nats:
        name = f"cadpipe-bench-{uuid.uuid4().hex[:8]}"
        settings = S3Settings(**moto.s3_fields(name))
        bucket = s3.Bucket(s3.make_client(settings), name)
        bucket.create_if_missing()
        yield Backends(moto, nats, settings, bucket)


@contextmanager
def process(
    args: list[str],
    env: dict[str, str],
    port: int,
    *,
    timeout: float = 60.0,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`python {args}` (a service or a dev server) with env, quiet, once it listens on port;
    terminated (then killed) on exit. cwd: where `-m` finds its package (another checkout)."""
    child = subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, "LOG_LEVEL": "WARNING", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
    )
    try:
        wait_for_port(port, timeout=timeout)
        yield child
    finally:
        child.terminate()
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@dataclass(frozen=True)
class MotoProcess:
    pid: int
    env: dict[str, str]
    """The S3 variables that point a service at it and its bucket."""
    bucket: s3.Bucket


@contextmanager
def moto_process() -> Iterator[MotoProcess]:
    """moto's S3 server in a child process of its own (its CPU counted apart from the
    benchmark's), with a fresh bucket."""
    port = free_port()
    name = f"cadpipe-bench-{uuid.uuid4().hex[:8]}"
    moto = MotoS3(port=port)  # for its addresses only: the server runs in the child
    with process(["-m", "cadpipe.devstack", "s3", str(port)], {}, port) as child:
        bucket = s3.Bucket(s3.make_client(S3Settings(**moto.s3_fields(name))), name)
        bucket.create_if_missing()
        yield MotoProcess(child.pid, moto.env(name), bucket)


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each named process and its descendants; of "clients" (this process,
    whose children are the servers measured) without them."""
    return {name: cpu_seconds(pid, tree=name != "clients") for name, pid in pids.items()}


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...); None when the
    process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat(entry.name)) is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def process_tree(pid: int) -> list[int]:
    children = _children()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int, *, tree: bool = True) -> float:
    """User + system CPU of the process and (tree) every descendant, the exited ones included
    (their time is in their reaper's cutime/cstime)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for member in process_tree(pid) if tree else [pid]:
        if (fields := _stat(member)) is not None:
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / ticks


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy (not idle or waiting on I/O), by
    everything running on it: other users' processes too."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int, *, tree: bool = False) -> float:
    total = 0
    for member in process_tree(pid) if tree else [pid]:
        try:
            with open(f"/proc/{member}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024
