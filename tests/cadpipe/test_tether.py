"""cadpipe/tether.py with real processes: the command lives exactly as long as its starter, an
orderly stop keeps the directory, a starter's death removes it, and a killed tether takes the
command with it."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from support.polling import wait_until_blocking

from cadpipe import tether

TETHER = pathlib.Path(tether.__file__)


def running(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def store(tmp_path: pathlib.Path) -> pathlib.Path:
    directory = tmp_path / "store"
    directory.mkdir()
    (directory / "data").write_text("kept?")
    return directory


@pytest.fixture
def tethered(store: pathlib.Path, tmp_path: pathlib.Path) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def start(script: str = "exec sleep 60") -> tuple[subprocess.Popen[bytes], int]:
        """The tether running `sh -c script` (which first writes its pid); returns the tether
        and the command's pid."""
        pid_file = tmp_path / f"pid-{len(started)}"
        process = subprocess.Popen(
            [
                sys.executable,
                "-I",
                str(TETHER),
                "--remove-on-orphan",
                str(store),
                "--",
                "sh",
                "-c",
                f"echo $$ > {pid_file}; {script}",
            ],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )
        started.append(process)
        wait_until_blocking(lambda: pid_file.exists() and pid_file.read_text().strip(), within=5)
        return process, int(pid_file.read_text())

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def test_an_orderly_stop_ends_the_command_and_keeps_the_directory(
    tethered: object, store: pathlib.Path
) -> None:
    process, pid = tethered()  # type: ignore[operator]
    assert process.stdin is not None
    process.stdin.write(b"stop\n")
    process.stdin.close()
    process.wait(tether.STOP_SECONDS + 2)
    assert not running(pid)
    assert (store / "data").exists()


def test_the_starters_end_without_a_word_ends_the_command_and_removes_the_directory(
    tethered: object, store: pathlib.Path
) -> None:
    process, pid = tethered()  # type: ignore[operator]
    assert process.stdin is not None
    process.stdin.close()  # what the kernel does for a starter that was killed
    process.wait(tether.STOP_SECONDS + 2)
    assert not running(pid)
    assert not store.exists()


def test_sigterm_is_an_orderly_stop(tethered: object, store: pathlib.Path) -> None:
    process, pid = tethered()  # type: ignore[operator]
    process.send_signal(signal.SIGTERM)
    process.wait(tether.STOP_SECONDS + 2)
    assert not running(pid)
    assert store.exists()


def test_a_killed_tether_takes_its_command_along(tethered: object, store: pathlib.Path) -> None:
    process, pid = tethered()  # type: ignore[operator]
    process.kill()
    process.wait(5)
    wait_until_blocking(lambda: not running(pid), within=5, what="the command died")


def test_a_command_that_ignores_sigterm_is_killed(tethered: object) -> None:
    process, pid = tethered("trap '' TERM; while :; do sleep 0.1; done")  # type: ignore[operator]
    assert process.stdin is not None
    process.stdin.write(b"stop\n")
    process.stdin.close()
    process.wait(tether.STOP_SECONDS + 5)
    assert not running(pid)


def test_the_tether_ends_with_its_command(tethered: object, store: pathlib.Path) -> None:
    process, _ = tethered("exit 3")  # type: ignore[operator]
    assert process.wait(5) == 3
    assert store.exists()  # the command ended; the starter still decides about its files
