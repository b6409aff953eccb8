"""Fixtures for the worker's tests. The FreeCAD tests share one worker process per module (it is
what a deployment runs: `python -m services.worker` configured by environment, credentials in
that environment), each test with its own projects."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from worker_harness import FREECAD_LIB, WorkerProcess, worker_env

from cadpipe import messaging
from cadpipe.adapters import s3
from cadpipe.devstack import MotoS3, NatsServer
from cadpipe.settings import NatsSettings, S3Settings

CANARY_MONGODB_URI = "mongodb://canary-user:canary-mongo-secret@10.0.0.1/cadpipe"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.path.isfile(os.path.join(FREECAD_LIB, "FreeCAD.so")):
        return
    skip = pytest.mark.skip(reason=f"FreeCAD's modules are not in {FREECAD_LIB} (make freecad)")
    for item in items:
        if "freecad" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def scratch_root() -> Iterator[str]:
    """Outside /tmp on purpose: a job sees its own scratch as /tmp, so a root under /tmp would
    be hidden from it anyway; here other jobs' directories stay visible by path, and what keeps
    them out is their owner and mode."""
    root = tempfile.mkdtemp(prefix="cadpipe-worker-test-", dir="/var/tmp")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class SharedWorker:
    bucket: s3.Bucket
    nats_url: str
    scratch_root: str
    process: WorkerProcess
    s3_env: dict[str, str]
    timeout_seconds: float
    mounted_secret: str
    """A world-readable file, like a Kubernetes service account token, in a hidden directory."""


@pytest.fixture(scope="module")
def shared_worker(moto_server: MotoS3) -> Iterator[SharedWorker]:
    """One worker process with short limits (a 4 s wall clock, 768 MiB of address space,
    64 MiB files, 100 MiB of outputs, 32 processes), two jobs at a time, on a NATS server of
    its own."""
    name = f"cadpipe-worker-{uuid.uuid4().hex[:8]}"
    s3_env = moto_server.env(name)
    settings = S3Settings(**moto_server.s3_fields(name))  # type: ignore[arg-type]
    bucket = s3.Bucket(s3.make_client(settings), name)
    bucket.create_if_missing()
    root = tempfile.mkdtemp(prefix="cadpipe-worker-test-", dir="/var/tmp")
    secrets = tempfile.mkdtemp(prefix="cadpipe-secrets-", dir="/var/tmp")
    os.chmod(secrets, 0o755)
    token = os.path.join(secrets, "token")
    with open(token, "w") as f:
        f.write(f"service-account-token-{uuid.uuid4().hex}")
    os.chmod(token, 0o644)
    timeout = 4.0
    with NatsServer() as nats:
        worker = WorkerProcess(
            worker_env(
                s3_env,
                nats.url,
                root,
                JOB_TIMEOUT_SECONDS=str(timeout),
                MEMORY_LIMIT_BYTES=str(768 * 1024 * 1024),
                MAX_FILE_SIZE_BYTES=str(64 * 1024 * 1024),
                MAX_PROCESSES="32",
                MAX_OUTPUT_BYTES=str(100 * 1024 * 1024),
                CONCURRENCY="2",
                # Never used by the worker: here to show that nothing of its environment
                # reaches a script.
                MONGODB_URI=CANARY_MONGODB_URI,
                SANDBOX_HIDDEN_PATHS=json.dumps([secrets]),
            )
        ).start()
        try:
            yield SharedWorker(bucket, nats.url, root, worker, s3_env, timeout, token)
        finally:
            worker.stop()
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(secrets, ignore_errors=True)


@pytest.fixture
async def shared_js(shared_worker: SharedWorker) -> AsyncIterator[Any]:
    nc = await messaging.connect(NatsSettings(nats_url=shared_worker.nats_url), name="test")
    yield nc.jetstream()
    await nc.close()
