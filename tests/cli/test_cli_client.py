"""The command line's parts without the stack: it imports nothing of the servers' code; 429 waits
for Retry-After (against a small real HTTP server); following a version picks its own frames out
of the project's stream (hand-written fakes)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cli_stack import SAMPLES, cli_env, run_cli

from cadpipe_cli import errors
from cadpipe_cli.follow import Item, wait_for_generation, wait_for_version

pytestmark = pytest.mark.timeout(60)


def test_the_cli_imports_nothing_of_the_servers() -> None:
    code = (
        "import sys, cadpipe_cli.__main__, cadpipe_cli.commands\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('cadpipe', 'services', 'grpc', 'boto3', 'pymongo', 'nats'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == [], "cadpipe_cli is a REST client only"


# -- a scripted HTTP server ---------------------------------------------------------------------


class Scripted(ThreadingHTTPServer):
    """Answers each request with the next (status, headers, body) of its script; records the
    requests."""

    def __init__(self, answers: list[tuple[int, dict[str, str], dict[str, Any]]]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.answers = answers
        self.seen: list[tuple[str, str, dict[str, str], float]] = []
        self.bodies: list[bytes] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Scripted

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.server.bodies.append(self.rfile.read(length))
        self.server.seen.append(
            (self.command, self.path, dict(self.headers.items()), time.monotonic())
        )
        status, headers, body = self.server.answers.pop(0)
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[Any]:
    servers: list[Scripted] = []

    def start(*answers: tuple[int, dict[str, str], dict[str, Any]]) -> Scripted:
        server = Scripted(list(answers))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


UPLOADED = {"script": {"project": "demo", "version": 7}, "replayed": False}


def test_429_waits_for_retry_after_then_retries_the_same_upload(
    scripted: Any, tmp_path: pathlib.Path
) -> None:
    server = scripted(
        (429, {"Retry-After": "1"}, {"code": 8, "message": "too many uploads", "details": []}),
        (200, {}, UPLOADED),
    )
    result = run_cli(
        "submit", SAMPLES / "raises.py", "-p", "demo", env=cli_env(tmp_path, server.url, "cpt_x")
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "uploaded raises.py as demo v7"
    assert "rate limited (too many uploads); retrying in 1 s" in result.stderr
    (_, path, first, t1), (_, _, second, t2) = server.seen
    assert path == "/api/projects/demo/upload-script"
    assert t2 - t1 >= 0.95
    assert first["Idempotency-Key"] == second["Idempotency-Key"], "a retry is the same upload"
    assert first["Content-Type"] == "text/x-python"
    assert first["Authorization"] == "Bearer cpt_x"


def test_submit_reads_the_script_from_stdin(scripted: Any, tmp_path: pathlib.Path) -> None:
    server = scripted((200, {}, UPLOADED))
    script = "import FreeCAD\nbox = 1  # é\n"
    result = run_cli(
        "submit", "-", "-p", "demo", env=cli_env(tmp_path, server.url, "cpt_x"), stdin=script
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "uploaded the script from stdin as demo v7"
    assert server.bodies == [script.encode()]


def test_a_long_retry_after_is_not_waited_for(scripted: Any, tmp_path: pathlib.Path) -> None:
    server = scripted((429, {"Retry-After": "120"}, {"code": 8, "message": "slow down"}))
    result = run_cli("status", "demo", env=cli_env(tmp_path, server.url, "cpt_x"))

    assert result.returncode == 1
    assert result.stderr.startswith("error: rate limited: slow down; retry in 120 s")


@pytest.mark.parametrize(
    ("status", "code", "exit_code", "start"),
    [
        (503, 14, errors.UNREACHABLE, "error: cadpipe is unavailable: "),
        (504, 4, errors.TIMEOUT, "error: cadpipe timed out: "),
        (403, 7, errors.AUTH, "error: not allowed: "),
        (400, 3, errors.FAILED, "error: boom (HTTP 400)"),
        (501, 12, errors.FAILED, "error: this cadpipe server does not offer GET /api/projects"),
    ],
)
def test_http_errors_map_to_exit_codes(
    scripted: Any, tmp_path: pathlib.Path, status: int, code: int, exit_code: int, start: str
) -> None:
    server = scripted((status, {}, {"code": code, "message": "boom", "details": []}))
    result = run_cli("projects", env=cli_env(tmp_path, server.url, "cpt_x"))

    assert result.returncode == exit_code
    assert result.stderr.startswith(start), result.stderr


def test_a_server_that_is_not_cadpipe_is_named(tmp_path: pathlib.Path) -> None:
    class Html(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = run_cli("status", "demo", env=cli_env(tmp_path, url, "cpt_x"))
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    assert "is this cadpipe's URL?" in result.stderr


# -- following a version ------------------------------------------------------------------------


class FakeFeed:
    def __init__(self, *items: Item) -> None:
        self.items = list(items)

    def next(self, deadline: float | None) -> Item:
        if not self.items:
            raise errors.WaitTimeout("gave up waiting: --timeout reached")
        return self.items.pop(0)


class FakeApi:
    """Answers status?version=N from a list, one per call."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    def status(self, project: str, version: int = 0) -> dict[str, Any]:
        self.asked.append((project, version))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def frame(version: int, state: str, **extra: Any) -> Item:
    return Item("status", {"project": "p", "version": version, "state": state, **extra})


def follow(feed: FakeFeed, api: FakeApi, version: int = 3) -> tuple[dict[str, Any], list[str]]:
    shown: list[str] = []
    notices: list[str] = []
    final = wait_for_version(
        feed,  # type: ignore[arg-type]
        api,  # type: ignore[arg-type]
        "p",
        version,
        None,
        lambda s: shown.append(f"v{s['version']} {s['state']}"),
        notices.append,
    )
    return final, shown + [f"notice: {n}" for n in notices]


def test_following_ignores_other_versions_and_generations() -> None:
    feed = FakeFeed(
        frame(2, "completed"),  # the stream opens with the latest status: an older version
        frame(3, "processing", generation={"id": "g1", "state": "verifying", "version": 3}),
        frame(3, "processing"),
        frame(4, "processing"),  # someone else's next upload
        frame(3, "error", error="ValueError: no"),
    )
    final, shown = follow(feed, FakeApi({"version": 3, "state": "processing"}))

    assert final["state"] == "error" and final["error"] == "ValueError: no"
    assert shown == ["v3 processing", "v3 processing", "v3 error"]


def test_a_version_already_finished_is_not_waited_for() -> None:
    final, shown = follow(FakeFeed(), FakeApi({"version": 3, "state": "completed"}))

    assert final["state"] == "completed" and shown == ["v3 completed"]


def test_a_version_unknown_to_the_watcher_yet_is_queued() -> None:
    not_yet = errors.ApiError("not found: p has no version 3", errors.FAILED, http_status=404)
    _, shown = follow(FakeFeed(frame(3, "completed")), FakeApi(not_yet))

    assert shown == ["v3 queued", "v3 completed"]


def test_after_a_reconnection_the_status_is_asked_again() -> None:
    """The decisive change may have happened while the stream was down."""
    feed = FakeFeed(
        Item("reconnecting", detail="connection reset; reconnecting in 0.5 s"),
        Item("connected"),
    )
    api = FakeApi({"version": 3, "state": "processing"}, {"version": 3, "state": "completed"})
    final, shown = follow(feed, api)

    assert final["state"] == "completed"
    assert api.asked == [("p", 3), ("p", 3)]
    assert "notice: connection reset; reconnecting in 0.5 s" in shown


def test_a_silent_stream_times_out() -> None:
    with pytest.raises(errors.WaitTimeout):
        follow(FakeFeed(frame(3, "processing")), FakeApi({"version": 3, "state": "processing"}))


# -- following a generation ---------------------------------------------------------------------


class FakeGenerations:
    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)

    def generation(self, project: str, generation_id: str) -> dict[str, Any]:
        return self.answers.pop(0)


def progress(state: str, rnd: int, version: int = 0, gid: str = "g1", message: str = "") -> Item:
    return Item(
        "status",
        {
            "project": "p",
            "version": version,
            "state": state,
            "generation": {
                "id": gid, "state": state, "round": rnd, "max_rounds": 3,
                "version": version, "message": message,
            },
        },
    )  # fmt: skip


def test_following_a_generation_shows_its_rounds_only() -> None:
    feed = FakeFeed(
        frame(1, "completed"),  # a version's update, not the generation's
        progress("generating", 1),
        progress("verifying", 1, version=4),
        progress("generating", 1, gid="other"),
        progress("repairing", 2, version=4, message="bbox x 18.0 mm, expected 20.0 mm"),
        progress("verifying", 2, version=5),
        progress("succeeded", 2, version=5),
    )
    api = FakeGenerations(
        {"id": "g1", "state": "queued", "round": 0, "max_rounds": 3},
        {"id": "g1", "state": "succeeded", "round": 2, "result_version": 5},
    )
    seen: list[str] = []
    final = wait_for_generation(
        feed,  # type: ignore[arg-type]
        api,  # type: ignore[arg-type]
        "p",
        "g1",
        None,
        lambda g: seen.append(f"{g['round']} {g['state']} v{g['version']} {g['message']}".strip()),
        seen.append,
    )

    assert final["state"] == "succeeded" and final["result_version"] == 5
    assert seen == [
        "0 queued v0",
        "1 generating v0",
        "1 verifying v4",
        "2 repairing v4 bbox x 18.0 mm, expected 20.0 mm",
        "2 verifying v5",
        "2 succeeded v5",
    ]


def test_a_generation_never_steps_back_to_an_earlier_round() -> None:
    """The record is asked for first and may already be in round 1 when the stream's first frame
    (queued, round 0) arrives: that frame is not shown."""
    feed = FakeFeed(
        progress("queued", 0),
        progress("verifying", 1, version=4),
        progress("succeeded", 1, version=4),
    )
    api = FakeGenerations(
        {"id": "g1", "state": "generating", "round": 1, "max_rounds": 3},
        {"id": "g1", "state": "succeeded", "round": 1, "result_version": 4},
    )
    seen: list[str] = []
    wait_for_generation(
        feed,  # type: ignore[arg-type]
        api,  # type: ignore[arg-type]
        "p",
        "g1",
        None,
        lambda g: seen.append(f"{g['round']} {g['state']}"),
        seen.append,
    )

    assert seen == ["1 generating", "1 verifying", "1 succeeded"]
