"""`make run` as a user runs it: `python -m services.allinone` in a process of its own, on free
ports of 127.0.0.1. Ctrl-C stops it within seconds, even after it has run a job, and a SIGKILL
leaves no nats-server behind holding its port and store. Its logs are text on a terminal and
JSON in a pipe."""

from __future__ import annotations

import json
import os
import pathlib
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from support.polling import wait_until_blocking
from support.processes import REPO, child_env

from cadpipe.devstack import free_port, port_in_use

STOP_WITHIN_SECONDS = 5.0
SAMPLE = REPO / "tests" / "samples" / "box_with_hole.py"


@dataclass
class AllInOne:
    process: subprocess.Popen[bytes]
    nats_port: int
    api_url: str = ""
    token: str = ""
    stderr: bytearray = field(default_factory=bytearray)

    def descendants(self) -> dict[int, str]:
        """Every process below this one, by pid, with its command line."""
        children: dict[int, list[int]] = {}
        for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found: dict[int, str] = {}
        todo = list(children.get(self.process.pid, []))
        while todo:
            pid = todo.pop()
            found[pid] = command_line(pid)
            todo.extend(children.get(pid, []))
        return found

    def nats_servers(self) -> dict[int, str]:
        return {
            pid: cmd
            for pid, cmd in self.descendants().items()
            if cmd.split(" ", 1)[0].endswith("/nats-server")
        }

    def nats_store(self, pid: int) -> pathlib.Path:
        args = command_line(pid).split()
        return pathlib.Path(args[args.index("-sd") + 1])


def command_line(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pids: dict[int, str]) -> dict[int, str]:
    """Those still running the same command (a reused pid runs another)."""
    return {pid: cmd for pid, cmd in pids.items() if command_line(pid) == cmd and not _zombie(pid)}


def _zombie(pid: int) -> bool:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture
def start_allinone() -> Iterator[object]:
    started: list[AllInOne] = []

    def start(*, terminal: bool = False, **env: str) -> AllInOne:
        """Starts it and waits for its banner; stderr goes to a pseudo-terminal when
        `terminal`, else to a pipe."""
        nats_port = free_port()
        ports = {
            name: str(free_port())
            for name in (
                "HTTP_PORT",
                "SCRIPTS_GRPC_PORT",
                "WATCHER_GRPC_PORT",
                "WORKER_GRPC_PORT",
                "GENERATOR_GRPC_PORT",
                "S3_PORT",
            )
        }
        environment = child_env({**ports, "NATS_PORT": str(nats_port), "METRICS_PORT": "0"})
        environment.pop("LOG_FORMAT")  # as `make run` leaves it: the terminal decides
        environment.update(env)
        if terminal:
            reader, writer = pty.openpty()
        else:
            reader, writer = os.pipe()
        process = subprocess.Popen(
            [sys.executable, "-m", "services.allinone"],
            cwd=REPO,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=writer,
            # a process group of its own, as a shell gives a foreground command
            start_new_session=True,
        )
        os.close(writer)
        running = AllInOne(process, nats_port)
        started.append(running)
        threading.Thread(target=_collect, args=(reader, running.stderr), daemon=True).start()

        assert process.stdout is not None
        deadline = time.monotonic() + 60
        for raw in process.stdout:
            line = raw.decode()
            if match := re.search(r"REST API\s+(\S+)/api", line):
                running.api_url = match.group(1)
            if match := re.search(r"API token\s+(\S+)", line):
                running.token = match.group(1)
            if line.startswith("  NATS") or time.monotonic() > deadline:
                break
        assert running.api_url and running.token, running.stderr.decode(errors="replace")
        threading.Thread(target=process.stdout.read, daemon=True).start()  # keep it unblocked
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(10)


def _collect(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # a pseudo-terminal whose other side closed
            break
        if not chunk:
            break
        into.extend(chunk)
    os.close(fd)


def run_a_job(running: AllInOne, project: str) -> None:
    """One upload through the REST API, waited for until the watcher decided it: the worker
    has fetched, run and acked, which is what once held its NATS drain for 30 s."""
    auth = {"Authorization": f"Bearer {running.token}"}
    upload = urllib.request.Request(
        f"{running.api_url}/api/projects/{project}/upload-script",
        data=SAMPLE.read_bytes(),
        headers={**auth, "Content-Type": "text/x-python"},
    )
    with urllib.request.urlopen(upload, timeout=30) as response:
        assert response.status == 200

    def state() -> str:
        status = urllib.request.Request(
            f"{running.api_url}/api/projects/{project}/status", headers=auth
        )
        with urllib.request.urlopen(status, timeout=10) as response:
            return str(json.load(response).get("state", ""))

    wait_until_blocking(
        lambda: state() in ("completed", "error"), within=60, what=f"{project} decided"
    )


def test_ctrl_c_stops_everything_within_seconds_after_a_job(start_allinone: object) -> None:
    running: AllInOne = start_allinone(terminal=True)  # type: ignore[operator]
    run_a_job(running, "ctrl-c")
    (nats_pid,) = running.nats_servers()
    store = running.nats_store(nats_pid)
    assert store.is_dir()
    everything = running.descendants()

    began = time.monotonic()
    os.killpg(running.process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
    running.process.wait(STOP_WITHIN_SECONDS + 10)
    took = time.monotonic() - began

    assert took < STOP_WITHIN_SECONDS, f"stopped after {took:.1f} s"
    assert running.process.returncode == 0
    assert alive(everything) == {}
    assert not port_in_use(running.nats_port)
    assert not store.exists()
    # on a terminal, text for a person, not JSON
    lines = running.stderr.decode(errors="replace").splitlines()
    assert any(" allinone INFO cadpipe.allinone: stopping" in line for line in lines), lines[-5:]
    assert not any(line.lstrip().startswith("{") for line in lines)
    # every process of the group got the SIGINT; none of them complains about it
    assert not [line for line in lines if "Traceback" in line or " ERROR " in line]


def test_a_killed_allinone_leaves_no_nats_server_port_or_store(start_allinone: object) -> None:
    running: AllInOne = start_allinone()  # type: ignore[operator]
    (nats_pid,) = running.nats_servers()
    store = running.nats_store(nats_pid)
    assert port_in_use(running.nats_port)

    running.process.kill()  # SIGKILL: no handler, no finally, no atexit
    running.process.wait(10)

    wait_until_blocking(
        lambda: not alive({nats_pid: command_line(nats_pid) or "gone"}),
        within=5,
        what="nats-server gone",
    )
    wait_until_blocking(lambda: not port_in_use(running.nats_port), within=5, what="port free")
    wait_until_blocking(lambda: not store.exists(), within=5, what="store removed")
    # in a pipe, JSON for the log collector
    first = running.stderr.decode().splitlines()[0]
    assert json.loads(first)["service"] == "allinone"


def test_a_port_held_by_another_program_stops_it_at_once_with_its_name() -> None:
    """Something else on S3's port (an earlier make run still stopping, a MinIO): it says
    which port and which variable moves it, and exits 69 before starting anything, once the
    port has stayed taken for PORTS_SETTLE_SECONDS (moto's server used to wait for ever for a
    port it could not bind)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        ports = {
            name: str(free_port())
            for name in (
                "HTTP_PORT",
                "SCRIPTS_GRPC_PORT",
                "WATCHER_GRPC_PORT",
                "WORKER_GRPC_PORT",
                "GENERATOR_GRPC_PORT",
                "NATS_PORT",
            )
        }
        done = subprocess.run(
            [sys.executable, "-m", "services.allinone"],
            cwd=REPO,
            env=child_env({**ports, "S3_PORT": str(taken), "METRICS_PORT": "0"}),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 69, done.stderr
    assert f"{taken} (S3_PORT)" in done.stderr and "in use" in done.stderr
    assert "Traceback" not in done.stderr
