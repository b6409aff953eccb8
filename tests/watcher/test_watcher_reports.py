"""The geometry report, typed (GetReport), and a generation's progress merged into the project's
event stream (WatchStatus)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from watcher_harness import JobEvents, Service, finish_like_our_worker, publish_upload

from cadpipe import layout, messaging
from cadpipe.adapters.s3 import Bucket
from cadpipe.v1 import artifacts_pb2, events_pb2, generation_pb2, status_pb2
from services.watcher import messages, reports


def solid(x0: float, x1: float, *, valid: bool = True, volume: float = 100.0) -> dict[str, Any]:
    return {
        "valid": valid,
        "volume": volume,
        "area": 10.0,
        "faces": 6,
        "bounding_box": {
            "x_min": x0,
            "y_min": 0.0,
            "z_min": 0.0,
            "x_max": x1,
            "y_max": 20.0,
            "z_max": 30.0,
        },
    }


def worker_report(project: str, version: int) -> dict[str, Any]:
    """As services/worker/domain.py finish_report writes it."""
    return {
        "schema": 1,
        "project": project,
        "version": version,
        "freecad_version": "1.0.0",
        "files": [
            {
                "name": "m.fcstd",
                "key": "k1",
                "format": "fcstd",
                "kind": "document",
                "solids": [solid(0, 99)],
            },
            {
                "name": "m.step",
                "key": "k2",
                "format": "step",
                "kind": "brep",
                "solids": [solid(0, 4), solid(6, 10)],
            },
            {
                "name": "m.stl",
                "key": "k3",
                "format": "stl",
                "kind": "mesh",
                "triangles": 12,
                "points": 8,
                "closed": True,
                "area": 20.0,
                "volume": 200.0,
            },
        ],
        "all_solids_valid": True,
    }


def test_total_comes_from_the_step_file_over_all_its_solids() -> None:
    report = reports.geometry_report("p", 3, json.dumps(worker_report("p", 3)))
    assert (report.project, report.version, report.freecad_version) == ("p", 3, "1.0.0")
    assert report.solids == 2
    assert (report.total.x_mm, report.total.y_mm, report.total.z_mm) == (10.0, 20.0, 30.0)
    assert report.total.volume_mm3 == 200.0 and report.total.faces == 12 and report.total.valid
    step = next(f for f in report.files if f.format == "step")
    assert step.path == "m.step" and step.kind == "brep" and len(step.solids) == 2
    assert step.solids[0].x_mm == 4.0
    mesh = next(f for f in report.files if f.format == "stl")
    assert mesh.triangles == 12 and mesh.closed and mesh.volume_mm3 == 200.0
    assert json.loads(report.raw_json)["schema"] == 1


def test_total_falls_back_to_fcstd_and_is_unset_without_solids() -> None:
    raw = worker_report("p", 1)
    raw["files"] = [f for f in raw["files"] if f["format"] != "step"]
    raw["files"][0]["solids"][0]["valid"] = False
    fallback = reports.geometry_report("p", 1, json.dumps(raw))
    assert fallback.total.x_mm == 99.0 and not fallback.total.valid and fallback.solids == 1
    raw["files"] = [f for f in raw["files"] if f["format"] == "stl"]
    meshes_only = reports.geometry_report("p", 1, json.dumps(raw))
    assert not meshes_only.HasField("total") and meshes_only.solids == 0
    with pytest.raises(ValueError):
        reports.geometry_report("p", 1, "[1, 2]")


async def test_get_report_of_a_completed_version(
    service: Service, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    project = f"rep-{unique}"
    await publish_upload(js, project, 1)
    bucket.put(
        layout.output_key(project, 1, layout.REPORT_NAME),
        json.dumps(worker_report(project, 1)).encode(),
        content_type="application/json",
    )
    finish_like_our_worker(bucket, project, 1, {"m.step": b"ISO-10303-21;\n"})
    await job_events.wait_for(project, 1)
    report = await service.artifacts.GetReport(
        artifacts_pb2.GetReportRequest(project=project, version=1)
    )
    assert report.solids == 2 and report.total.x_mm == 10.0
    latest = await service.artifacts.GetReport(artifacts_pb2.GetReportRequest(project=project))
    assert latest.version == 1

    # a failed version, and one without a report, have none
    await publish_upload(js, project, 2)
    finish_like_our_worker(bucket, project, 2, {}, error="Traceback\nValueError: no")
    await job_events.wait_for(project, 2)
    for version, words in ((2, "failed"), (3, "no version 3")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await service.artifacts.GetReport(
                artifacts_pb2.GetReportRequest(project=project, version=version)
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert words in (caught.value.details() or "")


def update(project: str, state: str, sequence: int, *, version: int = 0) -> bytes:
    generation = generation_pb2.Generation(
        id="g1",
        project=project,
        state=state,
        round=1,
        max_rounds=3,
        rounds=[generation_pb2.GenerationRound(round=1, version=version, feedback="fine\nmore")],
    )
    return messaging.encode(events_pb2.GenerationUpdated(generation=generation, sequence=sequence))


def test_generation_news_drops_repeats_and_late_duplicates() -> None:
    seen: dict[str, int] = {}
    first = messages.status_from_generation(
        messaging.decode(update("p", "generating", 2, version=4), events_pb2.GenerationUpdated)
    )
    assert first.state == "generating" and first.version == 4
    assert first.generation.message == "fine" and first.generation.sequence == 2
    assert messages.generation_news(first, seen)
    assert not messages.generation_news(first, seen)
    older = status_pb2.ProjectStatus(generation=status_pb2.GenerationProgress(id="g1", sequence=1))
    assert not messages.generation_news(older, seen)


async def test_watch_status_merges_generation_updates_without_breaking_version_dedup(
    service: Service, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    project = f"genev-{unique}"
    await publish_upload(js, project, 1)
    finish_like_our_worker(bucket, project, 1, {"m.step": b"x"})
    await job_events.wait_for(project, 1)
    stream = service.status.WatchStatus(status_pb2.WatchStatusRequest(project=project))
    current = await asyncio.wait_for(stream.read(), 10)
    assert (current.version, current.state) == (1, "completed")
    for sequence, state in ((1, "generating"), (2, "generating"), (1, "queued"), (3, "succeeded")):
        await js.publish(messaging.generation_subject(project), update(project, state, sequence))
    seen = []
    while len(seen) < 3:
        seen.append(await asyncio.wait_for(stream.read(), 10))
    assert [(s.generation.sequence, s.state) for s in seen] == [
        (1, "generating"),
        (2, "generating"),
        (3, "succeeded"),
    ]
    # a version's news still passes the versions' own de-dup
    await publish_upload(js, project, 2)
    after = await asyncio.wait_for(stream.read(), 10)
    assert (after.version, after.state) == (2, "queued") and not after.HasField("generation")
    stream.cancel()
