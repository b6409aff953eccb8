"""Keeps a dev server's process tied to the life of the Python process that started it.

    python -I cadpipe/tether.py [--remove-on-orphan DIR] -- COMMAND [ARG...]

runs COMMAND for as long as this process's stdin stays open. The starter (cadpipe.devstack)
holds the write end of that pipe and nothing else does: when the starter dies in any way, a
SIGKILL included, the kernel closes the pipe, the read here returns end-of-file, and COMMAND
is stopped (SIGTERM, then SIGKILL after STOP_SECONDS). An orderly stop writes `stop` first
and then closes the pipe; only an end-of-file without it (the starter is gone) removes the
DIR given with --remove-on-orphan, which nobody else is left to clean up. A SIGTERM to the
tether is an orderly stop too.

Why a pipe and not only prctl(PR_SET_PDEATHSIG) in a preexec_fn of the starter: the death
signal fires when the *thread* that forked the child exits, not the process (a server started
from a worker thread would be killed when that thread ends), and preexec_fn is unsafe in a
process that already runs threads (moto's server does), where the child may deadlock between
fork and exec. The tether is single-threaded when it starts COMMAND, so it does set
PR_SET_PDEATHSIG on COMMAND (Linux), which covers the tether itself being killed.

Standard library only, and run as a file, so it starts in milliseconds and needs nothing of
cadpipe importable.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
from types import FrameType

STOP_SECONDS = 5.0
PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """In the child, between fork and exec: SIGKILL when the tether dies; and if it already
    died before the death signal was armed, exit at once."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


class _Stop(Exception):
    """Raised in the main thread by SIGTERM: an orderly stop."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def run(command: list[str], remove_on_orphan: str | None) -> int:
    parent = os.getpid()
    child = subprocess.Popen(command, preexec_fn=lambda: _die_with(parent))  # single-threaded here
    finished = threading.Event()
    lock = threading.Lock()
    reasons: list[str] = []  # the first one decides: "orphan", "stop" or "exited"

    def end(reason: str) -> None:
        with lock:
            if not reasons:
                reasons.append(reason)
        finished.set()

    def watch_starter() -> None:
        stop = False
        for line in sys.stdin.buffer:  # returns at end-of-file: the starter closed or died
            stop = stop or line.strip() == b"stop"
        end("stop" if stop else "orphan")

    def watch_child() -> None:
        child.wait()
        end("exited")

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the starter's Ctrl-C is the starter's
    signal.signal(signal.SIGTERM, _on_sigterm)
    threading.Thread(target=watch_starter, daemon=True).start()
    threading.Thread(target=watch_child, daemon=True).start()
    try:
        finished.wait()
    except _Stop:
        end("stop")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    if child.poll() is None:
        child.terminate()
        try:
            child.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if remove_on_orphan and reasons[0] == "orphan":
        shutil.rmtree(remove_on_orphan, ignore_errors=True)
    return child.returncode if child.returncode >= 0 else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--remove-on-orphan", metavar="DIR")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    return run(command, args.remove_on_orphan)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # os._exit, not sys.exit: the thread reading stdin may still be blocked in that read, and
    # an interpreter shutting down around it aborts (it cannot take the stdin buffer's lock)
    sys.stderr.flush()
    os._exit(code)
