"""The worker as deployed (`python -m services.worker`, real FreeCAD, nats-server, moto's S3
server): the sample parts, a failing script, and hostile scripts that must fail their own job
and nothing else. One worker process serves the whole module (see conftest.shared_worker)."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.polling import wait_until_blocking
from support.stl import stl_triangles
from worker_harness import (
    REPO,
    installed_freecad_version,
    keys,
    log_uid,
    probe_result,
    processes_of,
    read_text,
    sample,
    step_volume,
    submit,
    wait_marker,
)
from worker_shared import CANARY_MONGODB_URI, SharedWorker

from cadpipe import layout

pytestmark = pytest.mark.freecad


def project_name(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


async def run(
    worker: SharedWorker, js: Any, project: str, body: bytes | str, version: int = 1
) -> tuple[dict[str, Any], str]:
    """Submits a script and returns its marker and log once the worker has finished it."""
    data = body.encode() if isinstance(body, str) else body
    await submit(js, worker.bucket, project, version, data)
    marker = await wait_marker(worker.bucket, project, version, within=worker.timeout_seconds + 15)
    return marker, read_text(worker.bucket, marker["log_key"])


async def assert_next_job_completes(worker: SharedWorker, js: Any, project: str) -> None:
    """The worker is still serving: the reference part, right after, comes out complete."""
    marker, log = await run(worker, js, project, sample("box_with_hole.py"), version=2)
    assert marker["status"] == "completed", log
    assert len(marker["outputs"]) == 5


def assert_failed_alone(marker: dict[str, Any], worker: SharedWorker, project: str) -> None:
    assert marker["status"] == "error"
    assert marker["outputs"] == []
    assert keys(worker.bucket, layout.output_prefix(project, 1)) == []
    assert "_error_" in marker["log_key"]


# --- the sample parts ------------------------------------------------------------------------


async def test_reference_part_in_all_five_formats(
    shared_worker: SharedWorker, shared_js: Any, tmp_path: Path
) -> None:
    w, project = shared_worker, project_name("box")
    marker, log = await run(w, shared_js, project, sample("box_with_hole.py"))

    assert marker["status"] == "completed", log
    assert marker["exit_reason"] == "ok"
    assert marker["freecad_version"] == installed_freecad_version()
    assert marker["attempts"] == 1
    by_format = {o["format"]: o for o in marker["outputs"]}
    assert sorted(by_format) == ["fcstd", "iges", "obj", "step", "stl"]
    report_key = layout.output_key(project, 1, layout.REPORT_NAME)
    assert marker["report_key"] == report_key
    assert keys(w.bucket, layout.output_prefix(project, 1)) == sorted(
        [o["key"] for o in marker["outputs"]] + [report_key]
    )
    bodies = {}
    for fmt, output in by_format.items():
        assert output["name"] == f"MyHeadlessModel.{fmt}"
        stored = w.bucket.get(output["key"])
        assert stored is not None
        assert stored.content_type == layout.OUTPUT_FORMATS[fmt]
        assert len(stored.body) == output["size_bytes"] > 0
        assert hashlib.sha256(stored.body).hexdigest() == output["sha256"]
        bodies[fmt] = stored.body

    assert step_volume(bodies["step"], tmp_path) == pytest.approx(3497.345, abs=0.01)
    triangles = stl_triangles(bodies["stl"])
    assert triangles > 0

    report = json.loads(read_text(w.bucket, report_key))
    files = {f["format"]: f for f in report["files"]}
    assert sorted(files) == sorted(by_format)
    (step_solid,) = files["step"]["solids"]
    assert step_solid["valid"] is True
    assert step_solid["volume"] == pytest.approx(3497.345, abs=0.01)
    assert step_solid["bounding_box"] == pytest.approx(
        {"x_min": 0, "y_min": 0, "z_min": 0, "x_max": 20, "y_max": 20, "z_max": 10}
    )
    (document_solid,) = files["fcstd"]["solids"]
    assert document_solid["volume"] == pytest.approx(3497.345, abs=0.01)
    assert files["stl"]["triangles"] == triangles
    assert files["stl"]["closed"] is True
    assert files["obj"]["closed"] is True
    assert report["all_solids_valid"] is True

    parsed = layout.parse_log_key(marker["log_key"])
    assert parsed is not None and parsed.level == "info"
    assert "exit reason:  ok" in log
    assert "duration:" in log
    # FreeCAD's banner and progress counters are not in the log.
    assert "Juergen Riegel" not in log and "%)" not in log


async def test_bracket_with_upper_case_extensions(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    w, project = shared_worker, project_name("bracket")
    marker, log = await run(w, shared_js, project, sample("bracket.py"))

    assert marker["status"] == "completed", log
    assert sorted((o["name"], o["format"], o["content_type"]) for o in marker["outputs"]) == [
        ("bracket.FCStd", "fcstd", "application/vnd.freecad.fcstd"),
        ("bracket.STEP", "step", "model/step"),
        ("bracket.STL", "stl", "model/stl"),
    ]
    for output in marker["outputs"]:
        assert w.bucket.exists(layout.output_key(project, 1, output["name"]))
    report = json.loads(read_text(w.bucket, marker["report_key"]))
    step = next(f for f in report["files"] if f["name"] == "bracket.STEP")
    (solid,) = step["solids"]
    assert solid["volume"] == pytest.approx(14025.199, abs=0.01)
    assert solid["faces"] == 11
    assert solid["valid"] is True


async def test_a_script_that_raises_fails_with_its_traceback(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    w, project = shared_worker, project_name("raises")
    marker, log = await run(w, shared_js, project, sample("raises.py"))

    assert_failed_alone(marker, w, project)
    assert marker["exit_reason"] == "exception"
    assert marker["report_key"] == ""
    message = "ValueError: the requested wall thickness 0.0 mm is below the 0.8 mm minimum"
    assert marker["error"] == message
    traceback = log.split("===== stderr =====", 1)[1]
    assert traceback.lstrip().startswith("Traceback (most recent call last):")
    assert f'File "/tmp/{project}_v1.py", line 7, in <module>' in traceback
    assert traceback.rstrip().endswith(message)


# --- hostile scripts -------------------------------------------------------------------------


async def test_an_infinite_loop_is_stopped_at_the_timeout(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    w, project = shared_worker, project_name("loop")
    spinner = "print('spinning', flush=True)\nwhile True:\n    pass\n"
    marker, log = await run(w, shared_js, project, spinner)

    assert_failed_alone(marker, w, project)
    assert marker["exit_reason"] == "timeout"
    assert w.timeout_seconds <= marker["duration_seconds"] < w.timeout_seconds + 3
    assert "spinning" in log  # what it printed before it was killed is kept
    await assert_next_job_completes(w, shared_js, project)


async def test_a_memory_bomb_hits_its_memory_limit(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    w, project = shared_worker, project_name("memory")
    bomb = "hoard = []\nwhile True:\n    hoard.append(bytearray(64 * 1024 * 1024))\n"
    marker, log = await run(w, shared_js, project, bomb)

    assert_failed_alone(marker, w, project)
    assert marker["exit_reason"] == "limit_exceeded", log
    assert marker["error"].startswith("memory limit exceeded"), marker["error"]
    await assert_next_job_completes(w, shared_js, project)


async def test_a_fork_bomb_is_contained(shared_worker: SharedWorker, shared_js: Any) -> None:
    w, project = shared_worker, project_name("forks")
    marker, log = await run(w, shared_js, project, "import os\nwhile True:\n    os.fork()\n")

    assert_failed_alone(marker, w, project)
    assert marker["exit_reason"] in ("limit_exceeded", "timeout"), log
    # Every process the bomb made is gone with its job.
    uid = log_uid(log)
    await asyncio.to_thread(
        lambda: wait_until_blocking(
            lambda: not processes_of(uid), within=5, what="fork bomb survivors"
        )
    )
    await assert_next_job_completes(w, shared_js, project)


async def test_a_ten_gigabyte_file_stops_at_the_file_size_limit(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    w, project = shared_worker, project_name("bigfile")
    writer = (
        "import os\n"
        "chunk = b'x' * (1 << 20)\n"
        "with open(os.path.join(os.environ['FREECAD_OUTPUT'], 'huge.stl'), 'wb') as f:\n"
        "    for _ in range(10 * 1024):\n"
        "        f.write(chunk)\n"
    )
    marker, log = await run(w, shared_js, project, writer)

    assert_failed_alone(marker, w, project)
    assert marker["exit_reason"] == "limit_exceeded", log
    assert marker["error"].startswith("file size limit exceeded"), marker["error"]
    await assert_next_job_completes(w, shared_js, project)


async def test_no_network_not_even_to_the_s3_endpoint(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    w, project = shared_worker, project_name("network")
    s3_port = int(w.s3_env["S3_ENDPOINT_URL"].rsplit(":", 1)[1])
    script = f"import socket\nsocket.create_connection(('127.0.0.1', {s3_port}), timeout=3)\n"
    marker, log = await run(w, shared_js, project, script)

    assert_failed_alone(marker, w, project)
    assert marker["exit_reason"] == "exception"
    assert marker["error"] == "OSError: [Errno 101] Network is unreachable"
    assert "socket.create_connection" in log
    await assert_next_job_completes(w, shared_js, project)


async def test_no_credentials_in_the_environment(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    w, project = shared_worker, project_name("environ")
    script = (
        "import json, os, FreeCAD\n"
        "print('CADPIPE_PROBE ' + json.dumps({'environ': dict(os.environ),\n"
        "                                     'freecad_config': FreeCAD.ConfigDump()}))\n"
    )
    marker, log = await run(w, shared_js, project, script)

    found = probe_result(log)
    assert sorted(found["environ"]) == ["FREECAD_OUTPUT", "HOME", "LANG", "PATH"]
    for secret in (
        w.s3_env["AWS_SECRET_ACCESS_KEY"],
        w.s3_env["AWS_ACCESS_KEY_ID"],
        w.s3_env["S3_ENDPOINT_URL"],
        w.nats_url,
        CANARY_MONGODB_URI,
        "canary-mongo-secret",
    ):
        assert secret not in log
    assert not [k for k in found["environ"] if k.startswith(("AWS_", "MONGODB", "NATS", "S3_"))]
    # It ran without outputs, which is an error of its own, not a worker failure.
    assert marker["exit_reason"] == "no_outputs"
    await assert_next_job_completes(w, shared_js, project)


async def test_no_writes_outside_the_scratch_directory(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    w, project = shared_worker, project_name("writes")
    tag = uuid.uuid4().hex[:8]
    targets = {
        "tmp": f"/tmp/cadpipe-pwned-{tag}",
        "var_tmp": f"/var/tmp/cadpipe-pwned-{tag}",
        "dev_shm": f"/dev/shm/cadpipe-pwned-{tag}",
        "worker_code": str(REPO / "services" / "worker" / f"pwned-{tag}"),
        "scratch_root": os.path.join(w.scratch_root, f"pwned-{tag}"),
        "root_home": f"/root/cadpipe-pwned-{tag}",
    }
    script = (
        "import json\n"
        f"targets = {targets!r}\n"
        "results = {}\n"
        "for name, path in targets.items():\n"
        "    try:\n"
        "        with open(path, 'w') as f:\n"
        "            f.write('pwned')\n"
        "        results[name] = 'written'\n"
        "    except OSError as error:\n"
        "        results[name] = error.strerror\n"
        "print('CADPIPE_PROBE ' + json.dumps(results))\n"
        "raise SystemExit(1)\n"
    )
    marker, log = await run(w, shared_js, project, script)

    results = probe_result(log)
    written = await asyncio.to_thread(lambda: [p for p in targets.values() if os.path.exists(p)])
    assert written == []
    # A checkout under the host's /tmp (as CI's clean clone may be) is not even visible inside
    # the job, whose /tmp is its own: its directories do not exist there.
    refused = ("Read-only file system", "Permission denied", "No such file or directory")
    for name in targets:
        if name != "tmp":
            assert results[name] in refused, (name, results)
    # /tmp inside the job is its own scratch directory: the write lands there, and goes away
    # with it; the machine's /tmp never sees it (asserted above).
    assert results["tmp"] == "written"
    assert_failed_alone(marker, w, project)
    await assert_next_job_completes(w, shared_js, project)


async def test_no_reading_another_projects_files(
    shared_worker: SharedWorker, shared_js: Any
) -> None:
    w = shared_worker
    victim, attacker = project_name("victim"), project_name("attacker")
    secret = f"victim-secret-{uuid.uuid4().hex}"
    victim_script = (
        "import os, time\n"
        f"open('/tmp/secret.txt', 'w').write({secret!r})\n"
        "deadline = time.monotonic() + 3.5\n"
        "while not os.path.exists('/tmp/release') and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
        "with open(os.path.join(os.environ['FREECAD_OUTPUT'], 'v.stl'), 'w') as f:\n"
        "    f.write('solid v\\nendsolid v\\n')\n"
    )
    await submit(shared_js, w.bucket, victim, 1, victim_script.encode())
    pattern = os.path.join(w.scratch_root, "w-*", "j-*", "job.json")

    def victim_dir() -> str:
        # Job directories have opaque names; the job's own job.json names its script.
        for job_file in glob.glob(pattern):
            with contextlib.suppress(OSError):
                if f"{victim}_v1.py" in Path(job_file).read_text():
                    found = os.path.dirname(job_file)
                    if os.path.exists(os.path.join(found, "sandbox", "secret.txt")):
                        return found
        return ""

    await asyncio.to_thread(
        lambda: wait_until_blocking(victim_dir, within=5, what="the victim job did not start")
    )
    job_dir = victim_dir()
    worker_dir = os.path.dirname(job_dir)
    targets = {
        "secret": os.path.join(job_dir, "sandbox", "secret.txt"),
        "victim_script": os.path.join(job_dir, "sandbox", f"{victim}_v1.py"),
        "victim_sandbox": os.path.join(job_dir, "sandbox"),
        "victim_stdout": os.path.join(job_dir, "stdout.log"),
        "scratch_root": w.scratch_root,
        "worker_dir": worker_dir,
        "worker_environ": f"/proc/{w.process.process.pid}/environ" if w.process.process else "",
        "mounted_secret": w.mounted_secret,
    }
    attack = (
        "import json, os\n"
        f"targets = {targets!r}\n"
        "results = {}\n"
        "for name, path in targets.items():\n"
        "    try:\n"
        "        if os.path.isdir(path):\n"
        "            results[name] = 'listed: ' + ','.join(os.listdir(path))\n"
        "        else:\n"
        "            results[name] = 'read: ' + open(path, 'rb').read().decode(errors='replace')\n"
        "    except OSError as error:\n"
        "        results[name] = error.strerror\n"
        "print('CADPIPE_PROBE ' + json.dumps(results))\n"
        "raise SystemExit(1)\n"
    )
    marker, log = await run(w, shared_js, attacker, attack)
    await asyncio.to_thread(Path(job_dir, "sandbox", "release").touch)

    results = probe_result(log)
    assert secret not in log
    assert "service-account-token" not in log
    for name, result in results.items():
        assert result in ("Permission denied", "No such file or directory"), (name, result)
    assert_failed_alone(marker, w, attacker)
    victim_marker = await wait_marker(w.bucket, victim, 1)
    assert victim_marker["status"] == "completed"
