"""Reindex against the real stores: MongoDB rebuilt from the bucket, and the version a crashed
replica stored without an outbox entry gets its event."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from typing import Any

from scripts_harness import Service
from support.processes import child_env

from cadpipe import layout, messaging
from cadpipe.devstack import MotoS3
from cadpipe.v1 import scripts_pb2
from services.scripts.bootstrap import run_reindex
from services.scripts.domain import VersionRecord, s3_metadata

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def store_as_crashed_replica(service: Service, project: str, version: int, body: bytes) -> None:
    """What a replica that died right after its S3 write leaves: the object, nothing else."""
    record = VersionRecord(
        project,
        version,
        hashlib.sha256(body).hexdigest(),
        len(body),
        dt.datetime.now(dt.UTC),
        metadata={"by": "crashed"},
        upload_id="crashed",
    )
    assert service.bucket.put_if_absent(
        record.key, body, content_type=layout.SCRIPT_CONTENT_TYPE, metadata=s3_metadata(record)
    )


async def test_reindex_rebuilds_mongodb_from_the_bucket(
    service: Service, unique: str, mongo_db: Any
) -> None:
    project = f"rx-{unique}"
    stub = service.stub
    for i, key in enumerate(["", "req-2", ""], start=1):
        request = scripts_pb2.UploadScriptRequest(
            project=project, script=f"x = {i}\n", metadata={"n": str(i)}, idempotency_key=key
        )
        await stub.UploadScript(request, timeout=10)
    store_as_crashed_replica(service, project, 4, b"x = 4\n")
    now = dt.datetime.now(dt.UTC)
    service.bucket.put(layout.marker_key(project, 1), b"", content_type="text/plain")  # finished
    service.bucket.put(layout.log_key(project, 2, "error", now), b"boom", content_type="text/plain")
    listed = await stub.ListScripts(scripts_pb2.ListScriptsRequest(project=project), timeout=10)
    before = [
        (s.version, s.sha256, s.size_bytes, dict(s.metadata), s.uploaded_at.ToMilliseconds())
        for s in listed.scripts
    ]
    assert [b[0] for b in before] == [1, 2, 3, 4]  # listing already found the crashed one in S3

    for name in ("versions", "outbox", "idempotency"):
        mongo_db[name].delete_many({"project": project})
    mongo_db["projects"].delete_one({"_id": project})

    report = await run_reindex(service.settings)

    assert (report.projects, report.versions, report.events_queued) == (1, 4, 2)
    docs = list(mongo_db["versions"].find({"project": project}).sort("version", 1))
    after = [
        (
            d["version"],
            d["sha256"],
            d["size_bytes"],
            d["metadata"],
            int(d["uploaded_at"].timestamp() * 1000),
        )
        for d in docs
    ]
    assert after == before
    assert mongo_db["projects"].find_one({"_id": project})["latest"] == 4
    # version 1 is finished (marker), 2 failed the older way (error log): only 3 and 4 pending
    assert sorted(d["_id"] for d in mongo_db["outbox"].find({"project": project})) == [
        messaging.uploaded_msg_id(project, 3),
        messaging.uploaded_msg_id(project, 4),
    ]
    claim = mongo_db["idempotency"].find_one({"project": project, "key": "req-2"})
    assert (claim["state"], claim["version"]) == ("done", 2)

    # and the service goes on from there
    replay = await stub.UploadScript(
        scripts_pb2.UploadScriptRequest(
            project=project, script="x = 2\n", metadata={"n": "2"}, idempotency_key="req-2"
        ),
        timeout=10,
    )
    assert (replay.script.version, replay.replayed) == (2, True)
    fresh = await stub.UploadScript(
        scripts_pb2.UploadScriptRequest(project=project, script="x = 5\n"), timeout=10
    )
    assert fresh.script.version == 5


async def test_reindex_from_the_command_line(
    service: Service, moto_server: MotoS3, unique: str
) -> None:
    project = f"cli-{unique}"
    for i in range(3):
        await service.stub.UploadScript(
            scripts_pb2.UploadScriptRequest(project=project, script=f"x = {i}\n"), timeout=10
        )
    env = child_env(
        {
            **moto_server.env(service.bucket.name),
            "MONGODB_URI": f"mongomock://cli-{unique}",  # the child's own, empty MongoDB
            "MONGODB_DATABASE": "cadpipe",
            "LOG_FORMAT": "json",
        }
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.scripts", "reindex", "--project", project],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    summary = next(line for line in lines if line["message"] == "reindex done")
    assert (summary["projects"], summary["versions"], summary["events_queued"]) == (1, 3, 3)
