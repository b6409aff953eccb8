"""`cadpipe submit`, run as a real subprocess against the real local stack with FreeCAD: a
sample goes in, CAD files come out; a failing script exits 1 with its error line; in a
pseudo-terminal the status is shown live, and Ctrl-C ends a command cleanly."""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import re

import httpx
import pexpect
import pytest
from cli_stack import CADPIPE, SAMPLES, RunningStack, run_cli

pytestmark = [pytest.mark.freecad, pytest.mark.slow, pytest.mark.timeout(240)]

ANSI = r"(?:\x1b\[[0-9;?]*[A-Za-z])*"
"""Colour and cursor codes between words on a terminal."""


def api_outputs(live: RunningStack, project: str, version: int) -> dict[str, dict]:
    response = httpx.get(
        f"{live.url}/api/projects/{project}/outputs",
        params={"version": version},
        headers={"Authorization": f"Bearer {live.token}"},
    )
    response.raise_for_status()
    return {o["format"]: o for o in response.json()["outputs"]}


def test_submit_wait_download_saves_verified_files(
    live: RunningStack, env: dict[str, str], project: str, tmp_path: pathlib.Path
) -> None:
    out_dir = tmp_path / "out"
    result = run_cli(
        "submit", SAMPLES / "box_with_hole.py", "--project", project,
        "--wait", "--download", "stl,step", "-o", out_dir, env=env,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"uploaded box_with_hole.py as {project} v1"
    assert any(line.startswith("✓ v1 completed in ") for line in lines), result.stdout
    assert "\x1b[" not in result.stdout, "no colour or control codes when stdout is a pipe"

    reported = api_outputs(live, project, 1)
    step = (out_dir / "MyHeadlessModel.step").read_bytes()
    stl = (out_dir / "MyHeadlessModel.stl").read_bytes()
    assert step.startswith(b"ISO-10303-21;") and b"MANIFOLD_SOLID_BREP" in step
    assert len(stl) > 84
    assert hashlib.sha256(step).hexdigest() == reported["step"]["sha256"]
    assert hashlib.sha256(stl).hexdigest() == reported["stl"]["sha256"]
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "MyHeadlessModel.step",
        "MyHeadlessModel.stl",
    ], "only the files asked for, no partial downloads left behind"
    assert f"saved {out_dir / 'MyHeadlessModel.step'}" in result.stdout


def test_failing_script_exits_1_with_error_line_and_log_tail(
    live: RunningStack, env: dict[str, str], project: str
) -> None:
    result = run_cli("submit", SAMPLES / "raises.py", "-p", project, "--wait", env=env)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "✗ v1 error" in result.stdout
    error_lines = [line for line in result.stdout.splitlines() if line.startswith("error: ")]
    assert error_lines and "wall thickness 0.0 mm is below the 0.8 mm minimum" in error_lines[0]
    tail = result.stdout.split("--- end of the log", 1)[1]
    assert "ValueError" in tail, "the log's tail shows the traceback"


def test_submit_json_is_one_document(
    live: RunningStack, env: dict[str, str], project: str, tmp_path: pathlib.Path
) -> None:
    result = run_cli(
        "submit", SAMPLES / "box_with_hole.py", "-p", project, "--wait", "--json",
        "--download", "step", "-o", tmp_path, env=env,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["upload"]["script"]["version"] == 1
    assert document["status"]["state"] == "completed"
    assert document["status"]["version"] == 1
    [saved] = document["downloads"]
    assert saved["format"] == "step" and saved["verified"] is True
    assert hashlib.sha256(pathlib.Path(saved["path"]).read_bytes()).hexdigest() == saved["sha256"]


def test_submit_without_wait_returns_at_once(
    live: RunningStack, env: dict[str, str], project: str
) -> None:
    first = run_cli("submit", SAMPLES / "raises.py", "-p", project, "--json", env=env)
    second = run_cli("submit", SAMPLES / "raises.py", "-p", project, env=env)

    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["upload"]["script"]["version"] == 1
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"uploaded raises.py as {project} v2"


def slow_sample(tmp_path: pathlib.Path, seconds: float = 2.0) -> pathlib.Path:
    """The reference part, taking long enough for a person to watch it."""
    script = tmp_path / "slow_box.py"
    script.write_text(
        f"import time\ntime.sleep({seconds})\n" + (SAMPLES / "box_with_hole.py").read_text()
    )
    return script


def test_terminal_session_shows_the_status_live(
    live: RunningStack, env: dict[str, str], project: str, tmp_path: pathlib.Path
) -> None:
    transcript = io.StringIO()
    child = pexpect.spawn(
        str(CADPIPE),
        ["submit", str(slow_sample(tmp_path)), "-p", project, "--wait"],
        env={**env, "TERM": "xterm-256color"},
        encoding="utf-8",
        timeout=90,
        dimensions=(24, 120),
    )
    child.logfile_read = transcript
    child.expect(f"uploaded slow_box.py as {project} v1")
    child.expect(f"v1 {ANSI}processing")
    child.expect("0:00:01")  # the spinner line's elapsed time, redrawn while it runs
    child.expect(f"v1 {ANSI}completed{ANSI} in ")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == 0, transcript.getvalue()
    seen = transcript.getvalue()
    assert "\x1b[" in seen, "colour and cursor control on a terminal"
    assert any(frame in seen for frame in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"), "a spinner while it runs"
    assert "✓ v1 completed in " in re.sub(ANSI, "", seen)


def test_ctrl_c_stops_cleanly_with_130(
    live: RunningStack, env: dict[str, str], project: str
) -> None:
    submitted = run_cli("submit", SAMPLES / "box_with_hole.py", "-p", project, "--wait", env=env)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    transcript = io.StringIO()
    child = pexpect.spawn(str(CADPIPE), ["watch", project], env=env, encoding="utf-8", timeout=30)
    child.logfile_read = transcript
    try:
        child.expect("v1 ")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        print(transcript.getvalue())
    child.close()

    assert child.exitstatus == 130, transcript.getvalue()
    assert "interrupted" in transcript.getvalue()
    assert "Traceback" not in transcript.getvalue()
