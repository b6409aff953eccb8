"""JobService with hand-written fakes for S3, the sandbox and the nudge; the scratch directory
is real (a temporary directory)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import pytest

from cadpipe import layout, started
from cadpipe.marker import parse
from services.worker import sandbox_runner as runner
from services.worker.domain.job import Isolation, Job, Limits, job_from_event
from services.worker.domain.verdict import SandboxOutcome
from services.worker.jobs import JobConfig, JobService, NeverToRun, ScriptMissing
from services.worker.sandbox import SandboxJob
from services.worker.scratch import ScratchRoot

SCRIPT = b"print('hello')\n"
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
FULL = Isolation(True, True, True, True, False)


class FakeStorage:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.writes: list[str] = []
        self.fail_puts = False

    def add(self, key: str, body: bytes, content_type: str = "") -> None:
        self.objects[key] = (body, content_type)

    async def get_bytes(self, key: str) -> bytes | None:
        found = self.objects.get(key)
        return found[0] if found else None

    async def exists(self, key: str) -> bool:
        return key in self.objects

    async def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        if self.fail_puts:
            raise ConnectionError("S3 is away")
        self.objects[key] = (body, content_type)
        self.writes.append(key)

    async def put_if_absent(self, key: str, body: bytes, content_type: str) -> bool:
        if key in self.objects:
            return False
        await self.put_bytes(key, body, content_type)
        return True

    async def put_file(self, key: str, path: str, content_type: str) -> None:
        await self.put_bytes(key, _read(path), content_type)

    async def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)
        self.writes.append(f"DELETE {key}")


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


class FakeSandbox:
    """Plays a finished job: leaves files, streams and a report where the real one would."""

    mode = "fake"
    freecad_version = "0.20.2"

    def __init__(
        self,
        outcome: SandboxOutcome,
        files: dict[str, bytes] | None = None,
        stderr: str = "",
        report: object = None,
    ) -> None:
        self.isolation = FULL
        self.outcome = outcome
        self.files = files or {}
        self.stderr = stderr
        self.report = report
        self.jobs: list[SandboxJob] = []

    def alive(self) -> bool:
        return True

    async def ensure_running(self) -> None:
        return None

    async def run(self, job: SandboxJob) -> SandboxOutcome:
        self.jobs.append(job)
        self.leave_files(job)
        return self.outcome

    def leave_files(self, job: SandboxJob) -> None:
        assert (Path(job.sandbox_dir) / job.script_name).read_bytes() == SCRIPT
        for name, body in self.files.items():
            path = Path(job.sandbox_dir, runner.OUTPUT_DIR_NAME, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        Path(job.stdout_path).write_text("out\n")
        Path(job.stderr_path).write_text(self.stderr)
        if self.report is not None:
            report = Path(job.sandbox_dir, runner.REPORT_DIR_NAME, runner.REPORT_FILE_NAME)
            report.parent.mkdir()
            report.write_text(json.dumps(self.report))


class FakeNotifier:
    def __init__(self, fail: bool = False) -> None:
        self.nudged: list[tuple[str, int]] = []
        self.started: list[tuple[str, int]] = []
        self.fail = fail

    async def worker_started(self, project: str, version: int) -> None:
        if self.fail:
            raise ConnectionError("NATS is away")
        self.started.append((project, version))

    async def worker_finished(self, project: str, version: int) -> None:
        if self.fail:
            raise ConnectionError("NATS is away")
        self.nudged.append((project, version))


LIMITS = Limits(120, 2 * 1024**3, 120, 64, 1024**3, 256)


@pytest.fixture
def scratch(tmp_path: Path) -> ScratchRoot:
    root = ScratchRoot(str(tmp_path / "scratch"), os.getuid, drop_privileges=False)
    root.open()
    return root


def service(
    storage: FakeStorage, sandbox: FakeSandbox, scratch: ScratchRoot, notifier: FakeNotifier
) -> JobService:
    config = JobConfig(
        LIMITS, max_deliver=3, max_outputs=64, max_log_stream_bytes=4096, worker_name="test/1"
    )
    return JobService(storage, sandbox, scratch, notifier, config, clock=lambda: NOW)


def job(version: int = 1, sha256: str | None = None) -> Job:
    digest = hashlib.sha256(SCRIPT).hexdigest() if sha256 is None else sha256
    return job_from_event("box", version, "", digest)


def stored_script(storage: FakeStorage, version: int = 1) -> None:
    storage.add(layout.script_key("box", version), SCRIPT)


def job_dirs(scratch: ScratchRoot) -> list[str]:
    return [n for n in os.listdir(scratch.worker_dir) if n.startswith("j-")]


async def test_a_good_run_stores_outputs_report_log_and_the_marker_last(
    scratch: ScratchRoot,
) -> None:
    storage, notifier = FakeStorage(), FakeNotifier()
    stored_script(storage)
    sandbox = FakeSandbox(
        SandboxOutcome(exit_code=0, wall_seconds=0.05),
        files={"m.step": b"STEP", "m.STL": b"STL", "notes.txt": b"-"},
        report={
            "freecad_version": "0.20.2",
            "files": [
                {"path": "m.step", "kind": "brep", "solids": [{"valid": True, "volume": 1.5}]}
            ],
        },
    )
    marker = await service(storage, sandbox, scratch, notifier).handle(job(), attempt=1)

    assert marker is not None and marker.status == "completed" and marker.exit_reason == "ok"
    assert storage.writes[-1] == layout.marker_key("box", 1)
    assert parse(storage.objects[layout.marker_key("box", 1)][0]) == marker
    assert {o.name: (o.format, o.size_bytes, o.sha256) for o in marker.outputs} == {
        "m.step": ("step", 4, hashlib.sha256(b"STEP").hexdigest()),
        "m.STL": ("stl", 3, hashlib.sha256(b"STL").hexdigest()),
    }
    assert storage.objects["output/box/v1/m.STL"] == (b"STL", "model/stl")
    assert "output/box/v1/notes.txt" not in storage.objects
    report = json.loads(storage.objects[marker.report_key][0])
    assert report["files"][0]["solids"][0]["volume"] == 1.5
    assert marker.log_key == "logs/box/box_v1_info_20260102_030405.log"
    log = storage.objects[marker.log_key][0].decode()
    assert "notes.txt (not a recognised CAD format)" in log
    assert "===== stdout =====\nout\n" in log
    assert marker.attempts == 1 and marker.freecad_version == "0.20.2"
    assert notifier.started == [("box", 1)] and notifier.nudged == [("box", 1)]
    assert job_dirs(scratch) == []
    # the started record went first: the version's start, for the watcher
    assert storage.writes[0] == layout.started_key("box", 1)
    record = started.parse(storage.objects[layout.started_key("box", 1)][0])
    assert record == started.started(NOW, worker="test/1", attempt=1)


async def test_a_failed_run_presents_no_outputs(scratch: ScratchRoot) -> None:
    storage = FakeStorage()
    stored_script(storage)
    sandbox = FakeSandbox(
        SandboxOutcome(exit_code=1),
        files={"half.step": b"written before the error"},
        stderr="Traceback (most recent call last):\n  File x\nValueError: too thin\n",
    )
    marker = await service(storage, sandbox, scratch, FakeNotifier()).handle(job(), attempt=1)

    assert marker is not None and marker.status == "error"
    assert marker.exit_reason == "exception" and marker.error == "ValueError: too thin"
    assert marker.outputs == () and marker.report_key == ""
    assert not [k for k in storage.objects if k.startswith("output/")]
    assert "_error_" in marker.log_key
    assert storage.objects[marker.log_key][0].decode().endswith("ValueError: too thin\n")


async def test_a_run_that_saves_nothing_is_an_error(scratch: ScratchRoot) -> None:
    storage = FakeStorage()
    stored_script(storage)
    sandbox = FakeSandbox(SandboxOutcome(exit_code=0))
    marker = await service(storage, sandbox, scratch, FakeNotifier()).handle(job(), attempt=1)
    assert marker is not None and marker.exit_reason == "no_outputs"


async def test_links_the_job_left_are_not_followed(scratch: ScratchRoot, tmp_path: Path) -> None:
    secret = tmp_path / "worker-secret.txt"
    secret.write_text("s3cr3t")

    class Linking(FakeSandbox):
        def leave_files(self, job: SandboxJob) -> None:
            super().leave_files(job)
            out = Path(job.sandbox_dir, runner.OUTPUT_DIR_NAME)
            (out / "steal.step").symlink_to(secret)
            os.link(secret, out / "hard.stl")

    storage = FakeStorage()
    stored_script(storage)
    sandbox = Linking(SandboxOutcome(exit_code=0), files={"ok.obj": b"o"})
    marker = await service(storage, sandbox, scratch, FakeNotifier()).handle(job(), attempt=1)

    assert marker is not None and [o.name for o in marker.outputs] == ["ok.obj"]
    assert all(b"s3cr3t" not in body for body, _ in storage.objects.values())
    log = storage.objects[marker.log_key][0].decode()
    assert "steal.step (not a regular file of the job's own)" in log
    assert "hard.stl (not a regular file of the job's own)" in log


async def test_a_finished_version_is_not_run_again(scratch: ScratchRoot) -> None:
    storage = FakeStorage()
    stored_script(storage)
    storage.add(layout.marker_key("box", 1), b"")
    sandbox = FakeSandbox(SandboxOutcome(exit_code=0))
    result = await service(storage, sandbox, scratch, FakeNotifier()).handle(job(), attempt=2)
    assert result is None
    assert sandbox.jobs == [] and storage.writes == []


def started_before(storage: FakeStorage, attempt: int = 1) -> None:
    record = started.started(NOW, worker="gone/1", attempt=attempt)
    storage.add(layout.started_key("box", 1), record.to_json())


async def test_the_last_delivery_finishes_a_started_version_without_running_it(
    scratch: ScratchRoot,
) -> None:
    storage = FakeStorage()
    stored_script(storage)
    started_before(storage)
    storage.add("output/box/v1/left-by-attempt-1.step", b"partial")
    sandbox = FakeSandbox(SandboxOutcome(exit_code=0))
    notifier = FakeNotifier()
    marker = await service(storage, sandbox, scratch, notifier).handle(job(), attempt=3)

    assert sandbox.jobs == []
    assert marker is not None and marker.status == "error"
    assert marker.exit_reason == "redelivery_limit" and marker.attempts == 3
    assert "delivered 3 times" in marker.error
    assert "output/box/v1/left-by-attempt-1.step" not in storage.objects
    assert storage.writes[-1] == layout.marker_key("box", 1)
    assert notifier.nudged == [("box", 1)]


async def test_the_last_delivery_runs_a_version_no_run_ever_started(
    scratch: ScratchRoot,
) -> None:
    """Its deliveries were spent before any start (S3 or NATS away): no script killed a
    worker, so it is run."""
    storage = FakeStorage()
    stored_script(storage)
    sandbox = FakeSandbox(SandboxOutcome(exit_code=0), files={"a.stl": b"a"})
    marker = await service(storage, sandbox, scratch, FakeNotifier()).handle(job(), attempt=3)
    assert len(sandbox.jobs) == 1
    assert marker is not None and marker.status == "completed" and marker.attempts == 3


async def test_a_version_the_watcher_expired_is_never_run(scratch: ScratchRoot) -> None:
    storage = FakeStorage()
    stored_script(storage)
    record = started.expired(NOW, waited_seconds=1900, limit_seconds=1800)
    storage.add(layout.started_key("box", 1), record.to_json())
    sandbox, notifier = FakeSandbox(SandboxOutcome(exit_code=0)), FakeNotifier()
    with pytest.raises(NeverToRun, match="never started: waited 1900 s"):
        await service(storage, sandbox, scratch, notifier).handle(job(), attempt=1)
    assert sandbox.jobs == [] and storage.writes == []
    assert notifier.started == [] and notifier.nudged == []


async def test_a_retry_replaces_what_an_earlier_attempt_stored(scratch: ScratchRoot) -> None:
    storage = FakeStorage()
    stored_script(storage)
    started_before(storage)
    storage.add("output/box/v1/old-name.stl", b"from attempt 1")
    sandbox = FakeSandbox(SandboxOutcome(exit_code=0), files={"new.stl": b"n"})
    marker = await service(storage, sandbox, scratch, FakeNotifier()).handle(job(), attempt=2)
    assert marker is not None and marker.status == "completed"
    assert sorted(k for k in storage.objects if k.startswith("output/")) == [
        "output/box/v1/new.stl",
        "output/box/v1/report.json",
    ]


async def test_a_script_that_is_not_the_uploaded_one_is_not_run(scratch: ScratchRoot) -> None:
    storage = FakeStorage()
    stored_script(storage)
    sandbox = FakeSandbox(SandboxOutcome(exit_code=0))
    marker = await service(storage, sandbox, scratch, FakeNotifier()).handle(
        job(sha256="0" * 64), attempt=1
    )
    assert sandbox.jobs == []
    assert marker is not None and marker.exit_reason == "worker_error"
    assert "does not match the sha256" in marker.error


async def test_a_missing_script_is_reported_to_the_caller(scratch: ScratchRoot) -> None:
    storage = FakeStorage()
    with pytest.raises(ScriptMissing):
        await service(storage, FakeSandbox(SandboxOutcome()), scratch, FakeNotifier()).handle(
            job(), attempt=1
        )
    assert storage.writes == []


async def test_a_lost_nudge_does_not_fail_the_job(scratch: ScratchRoot) -> None:
    storage = FakeStorage()
    stored_script(storage)
    sandbox = FakeSandbox(SandboxOutcome(exit_code=0), files={"a.stl": b"a"})
    marker = await service(storage, sandbox, scratch, FakeNotifier(fail=True)).handle(job(), 1)
    assert marker is not None and marker.status == "completed"


async def test_an_s3_failure_is_raised_and_the_scratch_still_removed(
    scratch: ScratchRoot,
) -> None:
    storage = FakeStorage()
    stored_script(storage)
    storage.fail_puts = True
    sandbox = FakeSandbox(SandboxOutcome(exit_code=0), files={"a.stl": b"a"})
    with pytest.raises(ConnectionError):
        await service(storage, sandbox, scratch, FakeNotifier()).handle(job(), attempt=1)
    assert layout.marker_key("box", 1) not in storage.objects
    assert job_dirs(scratch) == []


async def test_when_two_runs_overlap_the_first_marker_stands(scratch: ScratchRoot) -> None:
    storage = FakeStorage()
    stored_script(storage)

    class Overlapped(FakeSandbox):
        async def run(self, job: SandboxJob) -> SandboxOutcome:
            # Another worker finishes the same version while this run is in the sandbox.
            storage.add(layout.marker_key("box", 1), b'{"schema": "cadpipe.marker/1"}')
            return await super().run(job)

    sandbox = Overlapped(SandboxOutcome(exit_code=0), files={"a.stl": b"a"})
    await service(storage, sandbox, scratch, FakeNotifier()).handle(job(), attempt=2)
    assert storage.objects[layout.marker_key("box", 1)][0] == b'{"schema": "cadpipe.marker/1"}'


@pytest.mark.parametrize("case", ["ran", "gave_up", "other_script"])
async def test_the_core_is_given_back_once_freecad_is_done_before_anything_is_stored(
    scratch: ScratchRoot, case: str
) -> None:
    """What the intake's next job waits for: the core, given back after the sandbox (or in
    place of it), before the outputs, the log and the marker are stored."""
    storage = FakeStorage()
    stored_script(storage)
    if case == "gave_up":
        started_before(storage)
    sandbox = FakeSandbox(SandboxOutcome(exit_code=0), files={"a.stl": b"a"})
    given_back: list[tuple[int, list[str]]] = []

    def core_done() -> None:
        given_back.append((len(sandbox.jobs), list(storage.writes)))

    sha = "0" * 64 if case == "other_script" else None
    attempt = 3 if case == "gave_up" else 1
    marker = await service(storage, sandbox, scratch, FakeNotifier()).handle(
        job(sha256=sha), attempt=attempt, core_done=core_done
    )
    assert marker is not None and storage.writes[-1] == layout.marker_key("box", 1)
    runs = 1 if case == "ran" else 0
    # once, after the sandbox ran (or did not), when only the started record was written
    assert given_back == [(runs, [layout.started_key("box", 1)] if case != "gave_up" else [])]
