"""ArtifactService against real servers: outputs as the marker lists them, presigned URLs that
download the exact bytes of exactly that version, logs listed and read back."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any

import grpc
import httpx
import pytest
from watcher_harness import (
    JobEvents,
    Service,
    finish_like_older_worker,
    finish_like_our_worker,
    publish_upload,
    put_log,
)

from cadpipe.adapters.s3 import Bucket
from cadpipe.v1 import artifacts_pb2

STEP_V1 = b"ISO-10303-21;\n/* version 1 */\nEND-ISO-10303-21;\n"
STL_V1 = b"solid v1\nendsolid v1\n"
STEP_V2 = b"ISO-10303-21;\n/* version 2 */\nEND-ISO-10303-21;\n"


async def complete(
    js: Any,
    bucket: Bucket,
    job_events: JobEvents,
    project: str,
    version: int,
    files: dict[str, bytes],
    *,
    older_contract: bool = False,
) -> None:
    await publish_upload(js, project, version)
    if older_contract:
        finish_like_older_worker(bucket, project, version, files)
    else:
        finish_like_our_worker(bucket, project, version, files)
    await job_events.wait_for(project, version)


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_download_url_serves_the_exact_bytes_of_the_latest_completed_version(
    service: Service, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    project = f"dl-{unique}"
    await complete(js, bucket, job_events, project, 1, {"m.step": STEP_V1, "m.stl": STL_V1})
    await complete(js, bucket, job_events, project, 2, {"m.step": STEP_V2})

    link = await service.artifacts.GetDownloadUrl(
        artifacts_pb2.GetDownloadUrlRequest(project=project, format="STP")  # an alias, any case
    )
    assert (link.version, link.file.format, link.file.key) == (
        2,
        "step",
        f"output/{project}/v2/m.step",
    )
    expires_in = link.expires_at.ToDatetime(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=14) < expires_in <= dt.timedelta(minutes=15)
    async with httpx.AsyncClient() as client:
        reply = await client.get(link.url)
        assert reply.status_code == 200 and reply.content == STEP_V2
        assert 'filename="m.step"' in reply.headers["content-disposition"]

        older = await service.artifacts.GetDownloadUrl(
            artifacts_pb2.GetDownloadUrlRequest(project=project, format="stl", version=1)
        )
        assert (await client.get(older.url)).content == STL_V1
    # The URL itself expires after the configured 15 minutes (SigV4 or SigV2 query form).
    query = urllib.parse.parse_qs(urllib.parse.urlparse(link.url).query)
    if "X-Amz-Expires" in query:
        assert query["X-Amz-Expires"] == ["900"]
    else:
        lifetime = int(query["Expires"][0]) - dt.datetime.now(dt.UTC).timestamp()
        assert 840 < lifetime <= 900


async def test_a_format_the_version_did_not_produce_is_not_found_even_when_an_older_one_has_it(
    service: Service, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    project = f"nofmt-{unique}"
    await complete(js, bucket, job_events, project, 1, {"m.step": STEP_V1, "m.stl": STL_V1})
    await complete(js, bucket, job_events, project, 2, {"m.step": STEP_V2})

    for version in (0, 2):
        error = await rpc_error(
            service.artifacts.GetDownloadUrl(
                artifacts_pb2.GetDownloadUrlRequest(project=project, format="stl", version=version)
            )
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "version 2" in (error.details() or "") and "step" in (error.details() or "")

    unknown = await rpc_error(
        service.artifacts.GetDownloadUrl(
            artifacts_pb2.GetDownloadUrlRequest(project=project, format="dwg")
        )
    )
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "dwg" in (unknown.details() or "")


async def test_no_completed_version_means_not_found(
    service: Service, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    project = f"failed-{unique}"
    for call in (
        service.artifacts.GetDownloadUrl(
            artifacts_pb2.GetDownloadUrlRequest(project=project, format="stl")
        ),
        service.artifacts.ListOutputs(artifacts_pb2.ListOutputsRequest(project=project)),
    ):
        assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND

    await publish_upload(js, project, 1)
    finish_like_our_worker(bucket, project, 1, {}, error="boom")
    await job_events.wait_for(project)
    error = await rpc_error(
        service.artifacts.ListOutputs(artifacts_pb2.ListOutputsRequest(project=project, version=1))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND and "failed: boom" in (error.details() or "")


async def test_list_outputs_reads_the_marker_or_the_older_contracts_output_prefix(
    service: Service, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    project = f"outs-{unique}"
    await complete(js, bucket, job_events, project, 1, {"m.step": STEP_V1, "m.stl": STL_V1})
    await complete(
        js, bucket, job_events, project, 2, {"legacy.iges": b"S      1\n"}, older_contract=True
    )

    latest = await service.artifacts.ListOutputs(artifacts_pb2.ListOutputsRequest(project=project))
    assert latest.version == 2
    assert [(o.name, o.format, o.size_bytes) for o in latest.outputs] == [
        ("legacy.iges", "iges", 9)
    ]

    first = await service.artifacts.ListOutputs(
        artifacts_pb2.ListOutputsRequest(project=project, version=1)
    )
    assert [(o.name, o.format) for o in first.outputs] == [("m.step", "step"), ("m.stl", "stl")]
    assert all(len(o.sha256) == 64 for o in first.outputs)


async def test_logs_are_listed_per_project_or_version_and_read_back(
    service: Service, bucket: Bucket, unique: str
) -> None:
    project = f"logs-{unique}"
    early = dt.datetime(2026, 11, 24, 10, 0, 0, tzinfo=dt.UTC)
    info = put_log(bucket, project, 1, "info", "v1 ran\n", written_at=early)
    error = put_log(bucket, project, 2, "error", "v2 failed\n", written_at=early)
    put_log(bucket, f"{project}x", 1, "info", "another project\n")
    bucket.put(f"logs/{project}/notes.txt", b"not a log", content_type="text/plain")

    every = await service.artifacts.ListLogs(artifacts_pb2.ListLogsRequest(project=project))
    assert [(g.key, g.version, g.level) for g in every.logs] == [
        (info, 1, "info"),
        (error, 2, "error"),
    ]
    assert every.logs[0].written_at.ToDatetime(tzinfo=dt.UTC) == early
    assert every.logs[0].size_bytes == len(b"v1 ran\n")

    second = await service.artifacts.ListLogs(
        artifacts_pb2.ListLogsRequest(project=project, version=2)
    )
    assert [g.key for g in second.logs] == [error]

    read = await service.artifacts.GetLog(
        artifacts_pb2.GetLogRequest(project=project, name=every.logs[1].name)
    )
    assert (read.content, read.log.level, read.log.version) == ("v2 failed\n", "error", 2)


async def test_get_log_accepts_only_log_names_of_that_project(
    service: Service, bucket: Bucket, unique: str
) -> None:
    project = f"getlog-{unique}"
    put_log(bucket, f"{project}x", 1, "info", "another project\n")
    for bad in ("../x.log", "notes.txt", f"{project}x_v1_info_20261124_101500.log", ""):
        error = await rpc_error(
            service.artifacts.GetLog(artifacts_pb2.GetLogRequest(project=project, name=bad))
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
    missing = await rpc_error(
        service.artifacts.GetLog(
            artifacts_pb2.GetLogRequest(
                project=project, name=f"{project}_v9_info_20261124_101500.log"
            )
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_artifact_reads_reject_invalid_project_names_and_versions(service: Service) -> None:
    calls = [
        service.artifacts.ListOutputs(artifacts_pb2.ListOutputsRequest(project="a/b")),
        service.artifacts.ListOutputs(artifacts_pb2.ListOutputsRequest(project="ok", version=-1)),
        service.artifacts.GetDownloadUrl(
            artifacts_pb2.GetDownloadUrlRequest(project="..", format="stl")
        ),
        service.artifacts.ListLogs(artifacts_pb2.ListLogsRequest(project="")),
        service.artifacts.GetLog(artifacts_pb2.GetLogRequest(project="a b", name="x")),
    ]
    for call in calls:
        assert (await rpc_error(call)).code() == grpc.StatusCode.INVALID_ARGUMENT
