"""Work intake under real conditions: replicas sharing the stream, a worker killed mid-job, a
worker told to stop mid-job. Real nats-server, moto's S3 server, FreeCAD."""

from __future__ import annotations

import asyncio
import glob
import os
import signal
import uuid
from collections import Counter
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.polling import wait_until_blocking
from worker_harness import (
    SLOW_SCRIPT,
    STL_SCRIPT,
    WorkerProcess,
    keys,
    processes_of,
    read_text,
    settings_for,
    submit,
    wait_marker,
    worker_env,
)

from cadpipe import layout
from cadpipe.adapters import s3
from cadpipe.devstack import MotoS3
from cadpipe.settings import NatsSettings, S3Settings
from services.worker.bootstrap import start

pytestmark = pytest.mark.freecad


def process_env(
    moto: MotoS3, bucket: s3.Bucket, nats: NatsSettings, root: str, **extra: str
) -> dict[str, str]:
    return worker_env(moto.env(bucket.name), nats.nats_url, root, **extra)


def job_dirs(root: str, project: str) -> list[str]:
    """Job directories have opaque names; each one's job.json names its script."""
    found = []
    for job_file in glob.glob(os.path.join(root, "w-*", "j-*", "job.json")):
        try:
            with open(job_file) as f:
                if f"{project}_v" in f.read():
                    found.append(os.path.dirname(job_file))
        except FileNotFoundError:
            continue
    return found


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


async def serving(port: int) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=2
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def running_job_uid(root: str, project: str) -> int | None:
    """The uid the project's job runs as, once its sandbox is set up (job.json comes first,
    the sandbox directory and its owner after) and a process of that uid runs."""
    for job_dir in job_dirs(root, project):
        try:
            uid = os.stat(os.path.join(job_dir, "sandbox")).st_uid
        except FileNotFoundError:
            continue
        if uid == os.geteuid() or processes_of(uid):  # the same uid: no privileges to drop
            return uid
    return None


async def start_slow_job(
    js: Any, bucket: s3.Bucket, root: str, project: str, seconds: float
) -> int:
    """Submits version 1 of a script that sleeps, and returns the uid its job runs as, once a
    worker has started it."""
    await submit(js, bucket, project, 1, SLOW_SCRIPT.format(seconds=seconds).encode())
    found: list[int] = []

    def started() -> bool:
        uid = running_job_uid(root, project)
        found.extend(() if uid is None else (uid,))
        return bool(found)

    await asyncio.to_thread(
        lambda: wait_until_blocking(started, within=10, what="the job did not start")
    )
    return found[0]


async def test_two_workers_run_each_of_twenty_versions_exactly_once(
    bucket: s3.Bucket,
    s3_settings: S3Settings,
    nats_settings: NatsSettings,
    js: Any,
    scratch_root: str,
) -> None:
    project = f"pair-{uuid.uuid4().hex[:8]}"
    # One replica forks jobs from its zygote, the other starts a fresh interpreter per job:
    # both sandboxes, one stream.
    async with (
        start(settings_for(s3_settings, nats_settings, scratch_root, sandbox_mode="zygote")) as a,
        start(settings_for(s3_settings, nats_settings, scratch_root, sandbox_mode="fresh")) as b,
    ):
        assert await serving(a.port) and await serving(b.port)
        for version in range(1, 21):
            await submit(js, bucket, project, version, STL_SCRIPT.encode())
        markers = await asyncio.gather(
            *(wait_marker(bucket, project, v, within=60) for v in range(1, 21))
        )

    assert [m["status"] for m in markers] == ["completed"] * 20
    assert [m["attempts"] for m in markers] == [1] * 20
    logs = keys(bucket, layout.logs_prefix(project))
    parsed = [layout.parse_log_key(k) for k in logs]
    assert sorted(p.version for p in parsed if p) == list(range(1, 21))  # one run per version
    ran_on = Counter(
        line.split()[-1]
        for key in logs
        for line in read_text(bucket, key).splitlines()
        if line.startswith("worker:")
    )
    assert set(ran_on) <= {a.worker_name, b.worker_name}
    assert sum(ran_on.values()) == 20


async def test_a_worker_killed_mid_job_hands_the_job_to_another(
    moto_server: MotoS3,
    bucket: s3.Bucket,
    s3_settings: S3Settings,
    nats_settings: NatsSettings,
    js: Any,
    scratch_root: str,
) -> None:
    project = f"killed-{uuid.uuid4().hex[:8]}"
    env = process_env(moto_server, bucket, nats_settings, scratch_root, ACK_WAIT_SECONDS="1.5")
    first = WorkerProcess(env).start()
    try:
        sandbox_uid = await start_slow_job(js, bucket, scratch_root, project, seconds=2)
        assert first.process is not None
        zygotes = children(first.process.pid)
        first.signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.stop()

    # The zygote, the job's supervisor and the job all die with their worker.
    def all_gone() -> bool:
        return not processes_of(sandbox_uid) and not any(
            os.path.exists(f"/proc/{p}") for p in zygotes
        )

    await asyncio.to_thread(
        lambda: wait_until_blocking(
            all_gone, within=10, what="processes of the killed worker survived it"
        )
    )
    assert not await asyncio.to_thread(bucket.exists, layout.marker_key(project, 1))

    async with start(settings_for(s3_settings, nats_settings, scratch_root, ack_wait_seconds=1.5)):
        # The dead worker's scratch is cleared by the next worker on the machine.
        assert not job_dirs(scratch_root, project)
        marker = await wait_marker(bucket, project, 1, within=30)

    assert marker["status"] == "completed"
    assert marker["attempts"] == 2
    assert len(keys(bucket, layout.version_logs_prefix(project, 1))) == 1  # finished once
    assert [o["name"] for o in marker["outputs"]] == ["tiny.stl"]


async def test_sigterm_lets_the_running_job_finish(
    moto_server: MotoS3,
    bucket: s3.Bucket,
    nats_settings: NatsSettings,
    js: Any,
    scratch_root: str,
) -> None:
    project = f"term-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(process_env(moto_server, bucket, nats_settings, scratch_root)).start()
    try:
        await start_slow_job(js, bucket, scratch_root, project, seconds=1)
        worker.signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 20) == 0
    finally:
        worker.stop()
    marker = await wait_marker(bucket, project, 1, within=1)
    assert marker["status"] == "completed"
    assert marker["attempts"] == 1


async def test_sigterm_hands_back_a_job_that_outlasts_the_drain_timeout(
    moto_server: MotoS3,
    bucket: s3.Bucket,
    s3_settings: S3Settings,
    nats_settings: NatsSettings,
    js: Any,
    scratch_root: str,
) -> None:
    project = f"handback-{uuid.uuid4().hex[:8]}"
    # Two slots: the one fetcher holds a pull request for both, and a job handed back at stop
    # must not be delivered to that request (it would come back only after ack_wait).
    env = process_env(
        moto_server,
        bucket,
        nats_settings,
        scratch_root,
        DRAIN_TIMEOUT_SECONDS="0.2",
        CONCURRENCY="2",
    )
    worker = WorkerProcess(env).start()
    try:
        await start_slow_job(js, bucket, scratch_root, project, seconds=1.5)
        worker.signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 20) == 0
    finally:
        worker.stop()
    assert not await asyncio.to_thread(bucket.exists, layout.marker_key(project, 1))

    async with start(settings_for(s3_settings, nats_settings, scratch_root)):
        marker = await wait_marker(bucket, project, 1, within=20)
    assert marker["status"] == "completed"
    assert marker["attempts"] == 2


async def test_a_dead_zygote_is_started_again(
    bucket: s3.Bucket,
    s3_settings: S3Settings,
    nats_settings: NatsSettings,
    js: Any,
    scratch_root: str,
) -> None:
    project = f"zygote-{uuid.uuid4().hex[:8]}"
    settings = settings_for(
        s3_settings, nats_settings, scratch_root, readiness_interval_seconds=0.2
    )
    # zygotes of stacks that other test modules run in this process are not this worker's
    others = {p for p in children(os.getpid()) if b"zygote" in cmdline(p)}
    async with start(settings) as worker:
        (zygote,) = [
            p for p in children(os.getpid()) if b"zygote" in cmdline(p) and p not in others
        ]
        os.kill(zygote, signal.SIGKILL)
        await submit(js, bucket, project, 1, STL_SCRIPT.encode())
        marker = await wait_marker(bucket, project, 1, within=20)
        assert await serving(worker.port)
    assert marker["status"] == "completed"


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""
