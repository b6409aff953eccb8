"""A user's whole journey through REST: upload the reference part, watch it become ready,
download every format, read the log; and every NATS listener hears exactly one completion."""

from __future__ import annotations

import asyncio
import io
import json
import pathlib
import zipfile
from typing import Any

import httpx
import pytest
from support.stl import stl_triangles

from cadpipe import messaging
from cadpipe.v1 import events_pb2
from services.allinone.stack import Stack

SAMPLES = pathlib.Path(__file__).parent.parent / "samples"
pytestmark = [pytest.mark.freecad, pytest.mark.timeout(90)]


def assert_valid(fmt: str, data: bytes) -> None:
    if fmt == "step":
        assert data.startswith(b"ISO-10303-21;") and b"MANIFOLD_SOLID_BREP" in data
    elif fmt == "iges":
        assert data[72:73] == b"S", "IGES files open with a Start section line"
    elif fmt == "stl":
        assert stl_triangles(data) > 0
    elif fmt == "obj":
        lines = data.decode().splitlines()
        assert any(line.startswith("v ") for line in lines)
        assert any(line.startswith("f ") for line in lines)
    elif fmt == "fcstd":
        assert "Document.xml" in zipfile.ZipFile(io.BytesIO(data)).namelist()
    else:
        raise AssertionError(f"unexpected format {fmt}")


async def sse_states(client: httpx.AsyncClient, project: str, seen: list[dict[str, Any]]) -> None:
    async with client.stream("GET", f"/api/projects/{project}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                status = json.loads(line.removeprefix("data:"))
                seen.append(status)
                if status.get("state") in ("completed", "error", "timeout"):
                    return


async def test_upload_to_download_through_rest(pipeline: Stack, js: Any, unique: str) -> None:
    project = f"e2e-{unique}"
    script = (SAMPLES / "box_with_hole.py").read_text()
    auth = {"Authorization": f"Bearer {pipeline.user_token}"}
    async with (
        httpx.AsyncClient(base_url=pipeline.api_url, timeout=30, headers=auth) as client,
        httpx.AsyncClient(timeout=30) as s3_client,  # a presigned URL is its own credential
    ):
        upload = await client.post(
            f"/api/projects/{project}/upload-script", json={"script": script}
        )
        assert upload.status_code == 200, upload.text
        assert upload.json()["script"]["version"] == 1

        # A project is visible to its owner once the first upload claimed it: watch from then.
        # FreeCAD takes seconds, so the stream still sees the version processing.
        seen: list[dict[str, Any]] = []
        watching = asyncio.create_task(sse_states(client, project, seen))

        await asyncio.wait_for(watching, 60)
        states = [s["state"] for s in seen]
        assert "processing" in states and states[-1] == "completed", states

        status = (await client.get(f"/api/projects/{project}/status")).json()
        assert status["state"] == "completed" and status["version"] == 1
        assert sorted(status["formats"]) == ["fcstd", "iges", "obj", "step", "stl"]

        for fmt in status["formats"]:
            link = await client.get(f"/api/projects/{project}/download/{fmt}")
            assert link.status_code == 200, link.text
            assert link.json()["version"] == 1
            file = await s3_client.get(link.json()["url"])
            assert file.status_code == 200
            assert_valid(fmt, file.content)

        logs = (await client.get(f"/api/projects/{project}/logs")).json()["logs"]
        assert [log["level"] for log in logs] == ["info"]
        log = await client.get(f"/api/projects/{project}/logs/{logs[0]['name']}")
        assert log.status_code == 200 and log.json()["content"]

    # Exactly one completion event is stored on the stream for this version.
    consumer = await js.pull_subscribe(f"cadpipe.jobs.*.{project}", durable=None)
    [event] = await consumer.fetch(1, timeout=5)
    finished = messaging.decode(event.data, events_pb2.JobFinished)
    assert (finished.project, finished.version, finished.status) == (project, 1, "completed")
    with pytest.raises(asyncio.TimeoutError):
        await consumer.fetch(1, timeout=1)
