"""The reading commands, login and the exit codes of `cadpipe`, as a real subprocess against the
real local stack: clear messages for 404, a wrong token (exit 4), a stack that is down (exit 5),
JSON that parses on every command."""

from __future__ import annotations

import json
import pathlib
import signal
import socket
import stat
import subprocess
import uuid

import httpx
import pytest
from cli_stack import CADPIPE, SAMPLES, RunningStack, cli_env, run_cli

pytestmark = [pytest.mark.freecad, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def finished(live: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A project with v1 completed (the reference part) and v2 failed (raises.py)."""
    name = f"cli-{uuid.uuid4().hex[:10]}"
    env = cli_env(tmp_path_factory.mktemp("home"), live.url, live.token)
    for sample, code in (("box_with_hole.py", 0), ("raises.py", 1)):
        result = run_cli("submit", SAMPLES / sample, "-p", name, "--wait", env=env)
        assert result.returncode == code, result.stdout + result.stderr
    return name


def unsupported(live: RunningStack, method: str, path: str, **kwargs: object) -> str:
    """Why the server cannot take this route yet ("" when it can): branches adding it land in
    main after this one."""
    response = httpx.request(
        method,
        f"{live.url}{path}",
        headers={"Authorization": f"Bearer {live.token}"},
        **kwargs,  # type: ignore[arg-type]
    )
    body = response.json() if response.content else {}
    message = str(body.get("message", ""))
    if response.status_code == 501 or message.startswith("no route"):
        return f"{method} {path} is not served yet ({response.status_code}: {message})"
    if response.status_code == 500:
        return f"{method} {path} is not implemented by the backend yet (500: {message})"
    return ""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- exit codes and messages ------------------------------------------------------------------


def test_unknown_project_is_a_clear_404(env: dict[str, str]) -> None:
    result = run_cli("status", "no-such-project", env=env)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: not found: ")
    assert "no-such-project" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_token_exits_4(live: RunningStack, home: pathlib.Path) -> None:
    result = run_cli("status", "demo", env=cli_env(home, live.url, "cpt_wrong"))

    assert result.returncode == 4
    assert result.stderr.startswith("error: authentication failed: ")
    assert "cadpipe login" in result.stderr  # the hint says how to fix it


def test_no_token_at_all_exits_4(live: RunningStack, home: pathlib.Path) -> None:
    result = run_cli("versions", "demo", env=cli_env(home, live.url, None))

    assert result.returncode == 4
    assert "no API token" in result.stderr


def test_stack_down_exits_5(home: pathlib.Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = run_cli(
        "submit", SAMPLES / "box_with_hole.py", "-p", "demo", "--wait",
        env=cli_env(home, url, "cpt_any"),
    )  # fmt: skip

    assert result.returncode == 5
    assert result.stderr.startswith(f"error: cannot reach cadpipe at {url}: connection refused")


def test_errors_are_json_with_json(live: RunningStack, home: pathlib.Path) -> None:
    result = run_cli("status", "demo", "--json", env=cli_env(home, live.url, "cpt_wrong"))

    assert result.returncode == 4
    error = json.loads(result.stdout)["error"]
    assert error["exit_code"] == 4 and error["http_status"] == 401
    assert error["message"].startswith("authentication failed")


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    missing = run_cli("submit", SAMPLES / "box_with_hole.py", env=env)
    bad_format = run_cli("download", "demo", "--format", "dwg", env=env)

    assert missing.returncode == 2 and "--project" in missing.stderr
    assert bad_format.returncode == 2 and "unknown format dwg" in bad_format.stderr


def test_wait_timeout_exits_3(env: dict[str, str], project: str, tmp_path: pathlib.Path) -> None:
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(4)\n")  # outlives --timeout, not the stack
    result = run_cli("submit", slow, "-p", project, "--wait", "--timeout", "1", env=env)

    assert result.returncode == 3, result.stdout + result.stderr
    assert "v1 " in result.stderr and "--timeout" not in result.stdout
    assert f"cadpipe watch {project}" in result.stderr


# -- login and the config file ----------------------------------------------------------------


def test_login_saves_a_private_config_that_later_commands_use(
    live: RunningStack, home: pathlib.Path, finished: str
) -> None:
    bare = cli_env(home, None, None)
    login = run_cli("login", "--url", live.url, "--token", "-", env=bare, stdin=live.token + "\n")

    assert login.returncode == 0, login.stderr
    path = home / ".config" / "cadpipe" / "config.json"
    assert f"saved to {path}" in login.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {"url": live.url, "token": live.token}

    status = run_cli("status", finished, "--version", "1", env=bare)
    assert status.returncode == 0, status.stderr
    # the environment overrides the file
    overridden = run_cli("status", finished, env={**bare, "CADPIPE_TOKEN": "cpt_wrong"})
    assert overridden.returncode == 4


def test_login_refuses_a_wrong_token_and_saves_nothing(
    live: RunningStack, home: pathlib.Path
) -> None:
    result = run_cli(
        "login", "--url", live.url, "--token", "cpt_wrong", env=cli_env(home, None, None)
    )

    assert result.returncode == 4
    assert not (home / ".config" / "cadpipe" / "config.json").exists()


# -- reading ----------------------------------------------------------------------------------


def test_status_shows_the_outcome_and_exits_by_it(env: dict[str, str], finished: str) -> None:
    failed = run_cli("status", finished, env=env)
    completed = run_cli("status", finished, "--version", "1", "--json", env=env)

    assert failed.returncode == 1
    assert failed.stdout.startswith("✗ v2 error")
    assert "wall thickness" in failed.stdout
    assert completed.returncode == 0
    document = json.loads(completed.stdout)
    assert document["state"] == "completed" and document["version"] == 1
    assert {"step", "stl"} <= set(document["formats"])


def test_versions_lists_both(env: dict[str, str], finished: str) -> None:
    plain = run_cli("versions", finished, env=env)
    as_json = run_cli("versions", finished, "--json", env=env)

    assert plain.returncode == 0
    rows = [line.split("\t") for line in plain.stdout.splitlines()]
    assert rows[0][:3] == ["version", "uploaded", "size"]
    assert [row[0] for row in rows[1:]] == ["1", "2"]
    assert [v["version"] for v in json.loads(as_json.stdout)] == [1, 2]


def test_script_prints_the_version_byte_for_byte(env: dict[str, str], finished: str) -> None:
    result = run_cli("script", finished, "1", env=env)

    assert result.returncode == 0
    assert result.stdout == (SAMPLES / "box_with_hole.py").read_text()


def test_logs_print_the_version_log(env: dict[str, str], finished: str) -> None:
    latest = run_cli("logs", finished, env=env)
    first = run_cli("logs", finished, "--version", "1", "--json", env=env)

    assert latest.returncode == 0
    assert latest.stdout.startswith(f"==> {finished}_v2_error_")
    assert "ValueError: the requested wall thickness" in latest.stdout
    [log] = [json.loads(line) for line in first.stdout.splitlines()]
    assert log["log"]["version"] == 1 and log["log"]["level"] == "info"


def test_download_checks_sha256_and_reports_json(
    env: dict[str, str], finished: str, tmp_path: pathlib.Path
) -> None:
    result = run_cli(
        "download", finished, "--format", "obj,step", "-o", tmp_path, "--json", env=env
    )

    assert result.returncode == 0, result.stderr
    saved = json.loads(result.stdout)
    assert [s["format"] for s in saved] == ["obj", "step"]
    assert all(s["verified"] and s["version"] == 1 for s in saved)
    assert (tmp_path / "MyHeadlessModel.obj").read_bytes().count(b"\nf ") > 0


def test_download_of_a_format_never_made_is_404(env: dict[str, str], finished: str) -> None:
    result = run_cli("download", finished, "--format", "step", "--version", "2", env=env)

    assert result.returncode == 1
    assert result.stderr.startswith("error: not found: ")


def test_open_prints_the_web_app_address(
    live: RunningStack, env: dict[str, str], finished: str
) -> None:
    result = run_cli("open", finished, env=env)

    assert result.returncode == 0
    assert result.stdout.strip() == f"{live.url}/#/projects/{finished}"


def test_every_command_has_help_with_examples(env: dict[str, str]) -> None:
    commands = run_cli("--help", env=env).stdout.split("Commands:")[1].split()[::1]
    names = [
        word
        for word in commands
        if word in {"download", "generate", "login", "logs", "open", "projects", "script",
                    "status", "submit", "versions", "watch"}
    ]  # fmt: skip
    assert len(set(names)) == 11
    for name in set(names):
        result = run_cli(name, "--help", env=env)
        assert result.returncode == 0
        assert "Examples:" in result.stdout and f"cadpipe {name}" in result.stdout
        assert "--json" in result.stdout


# -- routes other branches are adding --------------------------------------------------------


def test_projects_lists_the_project(live: RunningStack, env: dict[str, str], finished: str) -> None:
    if reason := unsupported(live, "GET", "/api/projects"):
        pytest.skip(reason)
    plain = run_cli("projects", env=env)
    as_json = run_cli("projects", "--json", env=env)

    assert plain.returncode == 0, plain.stderr
    assert any(line.split("\t")[0] == finished for line in plain.stdout.splitlines())
    [mine] = [p for p in json.loads(as_json.stdout) if p["project"] == finished]
    assert mine["latest_version"] == 2


def test_generate_shows_each_round(live: RunningStack, env: dict[str, str], project: str) -> None:
    if reason := unsupported(
        live, "POST", f"/api/projects/{project}/generate", json={"prompt": "a 20 mm cube"}
    ):
        pytest.skip(reason)
    result = run_cli(
        "generate", "a 20 mm cube", "-p", project, "--expect", "bbox=20x20x20", "--wait",
        env=env, timeout=200,
    )  # fmt: skip
    as_json = run_cli("generate", "a 20 mm cube", "-p", project, "--wait", "--json", env=env)

    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert "round 1" in result.stdout
    if result.returncode == 0:
        assert "✓ succeeded in " in result.stdout
    document = json.loads(as_json.stdout)
    assert document["generation"]["state"] in ("succeeded", "failed")


def test_logs_follow_prints_each_next_version_log(env: dict[str, str], project: str) -> None:
    first = run_cli("submit", SAMPLES / "box_with_hole.py", "-p", project, "--wait", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    follower = subprocess.Popen(
        [str(CADPIPE), "logs", project, "--follow", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        v1 = json.loads(follower.stdout.readline())  # the latest version's log at once
        second = run_cli("submit", SAMPLES / "raises.py", "-p", project, "--wait", env=env)
        assert second.returncode == 1
        v2 = json.loads(follower.stdout.readline())  # then the next one's, when it ends
    finally:
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=20)
    assert v1["log"]["version"] == 1 and v1["log"]["level"] == "info"
    assert v2["log"]["version"] == 2 and "wall thickness" in v2["content"]
    assert follower.returncode == 130, err


def test_watch_json_is_a_line_per_update(env: dict[str, str], finished: str) -> None:
    result = run_cli("watch", finished, "--timeout", "2", "--json", env=env)

    assert result.returncode == 3  # --timeout ends a watch
    updates = [json.loads(line) for line in result.stdout.splitlines()[:-1]]
    error = json.loads(result.stdout.splitlines()[-1])["error"]
    assert updates[0]["version"] == 2 and updates[0]["state"] == "error"
    assert error["exit_code"] == 3
