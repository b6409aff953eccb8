"""The watcher against real servers: a worker simulated by writing its keys into S3, uploads by
publishing ScriptUploaded on JetStream, completion events read back from NATS."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import pytest
from support.polling import wait_until
from watcher_harness import (
    JobEvents,
    Service,
    ServiceFactory,
    finish_like_older_worker,
    finish_like_our_worker,
    publish_upload,
    put_log,
    start_like_our_worker,
    stored_job_events,
)

from cadpipe import layout, messaging, started
from cadpipe.adapters.s3 import Bucket
from cadpipe.v1 import events_pb2, status_pb2
from services.watcher import messages
from services.watcher.mongo_jobs import MongoJobs

STEP = b"ISO-10303-21;\nHEADER;\nENDSEC;\nEND-ISO-10303-21;\n"
STL = b"solid part\nfacet normal 0 0 1\nendfacet\nendsolid part\n"


async def status_of(service: Service, project: str, version: int = 0) -> status_pb2.ProjectStatus:
    return await service.status.GetStatus(
        status_pb2.GetStatusRequest(project=project, version=version)
    )


async def test_our_json_marker_completes_the_version_with_its_outputs(
    service: Service, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    project = f"json-{unique}"
    assert (await status_of(service, project)).state == "no_scripts"
    await publish_upload(js, project, 1)
    await wait_until(lambda: (project, 1) in service.running.watcher.pending, what="pending")
    assert (await status_of(service, project)).state == "queued"

    marker = finish_like_our_worker(
        bucket, project, 1, {"MyHeadlessModel.step": STEP, "MyHeadlessModel.stl": STL}
    )

    [event] = await job_events.wait_for(project)
    assert (event.version, event.status, event.error) == (1, "completed", "")
    assert [(o.name, o.format, o.size_bytes, o.sha256) for o in event.outputs] == [
        (o.name, o.format, o.size_bytes, o.sha256)
        for o in sorted(marker.outputs, key=lambda o: o.name)
    ]
    assert event.log_key == marker.log_key
    uploaded, finished = event.uploaded_at.ToDatetime(), event.finished_at.ToDatetime()
    assert uploaded <= finished <= event.detected_at.ToDatetime()
    # what the user waited: from the upload to the worker's finish, as the marker says
    assert event.duration_seconds == pytest.approx((finished - uploaded).total_seconds())
    assert 0 < event.duration_seconds < 30

    status = await status_of(service, project)
    assert (status.state, status.version, list(status.formats)) == ("completed", 1, ["step", "stl"])
    assert status.log_key == marker.log_key and status.HasField("finished_at")


async def test_our_error_marker_gives_error_with_the_workers_message(
    service: Service, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    project = f"err-{unique}"
    await publish_upload(js, project, 1)
    finish_like_our_worker(bucket, project, 1, {}, error="NameError: name 'Part' is not defined")

    [event] = await job_events.wait_for(project)
    assert event.status == "error"
    assert event.error == "NameError: name 'Part' is not defined"
    assert layout.parse_log_key(event.log_key) is not None
    status = await status_of(service, project, 1)
    assert (status.state, status.error) == ("error", event.error)


async def test_an_empty_marker_of_the_older_contract_completes_with_the_listed_outputs(
    service: Service, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    project = f"legacy-{unique}"
    await publish_upload(js, project, 1)
    outputs = finish_like_older_worker(
        bucket, project, 1, {"MyHeadlessModel.step": STEP, "MyHeadlessModel.stl": STL}
    )

    [event] = await job_events.wait_for(project)
    assert event.status == "completed"
    assert sorted((o.key, o.format, o.size_bytes) for o in event.outputs) == sorted(
        (o.key, o.format, o.size_bytes) for o in outputs
    )
    assert layout.parse_log_key(event.log_key).level == "info"  # type: ignore[union-attr]


@pytest.mark.parametrize("level", ["error", "info"])
async def test_an_empty_marker_with_no_outputs_is_an_error_linking_the_log(
    service: Service, js: Any, bucket: Bucket, job_events: JobEvents, unique: str, level: str
) -> None:
    """An older worker whose script saved nothing still writes its log and the empty marker:
    the version has nothing to download, so it is not `completed`."""
    project = f"legacy-empty-{level}-{unique}"
    await publish_upload(js, project, 1)
    # a file that is not a CAD format does not count as an output
    bucket.put(layout.output_key(project, 1, "notes.txt"), b"no part", content_type="text/plain")
    log_key = put_log(bucket, project, 1, level, "Traceback ...\nNameError: Part\n")
    bucket.put(layout.marker_key(project, 1), b"", content_type="text/plain")

    [event] = await job_events.wait_for(project)
    assert (event.status, event.error, event.log_key) == (
        "error",
        "finished without outputs",
        log_key,
    )
    assert list(event.outputs) == []
    status = await status_of(service, project, 1)
    assert (status.state, status.error, status.log_key) == ("error", event.error, log_key)


async def test_an_error_log_with_no_marker_means_error_with_the_end_of_that_log(
    make_service: ServiceFactory, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    project = f"errlog-{unique}"
    async with make_service(watcher_error_log_grace_seconds=0.2):
        await publish_upload(js, project, 1)
        key = put_log(
            bucket, project, 1, "error", "Traceback (most recent call last):\nValueError: bad\n"
        )
        [event] = await job_events.wait_for(project)
    assert (event.status, event.log_key) == ("error", key)
    assert event.error.endswith("ValueError: bad")


async def test_no_result_within_the_timeout_gives_timeout_and_exactly_one_event(
    make_service: ServiceFactory, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    project = f"timeout-{unique}"
    async with make_service(watcher_job_timeout_seconds=1.0) as service:
        await publish_upload(js, project, 1)
        assert start_like_our_worker(bucket, project, 1)
        [event] = await job_events.wait_for(project)
        assert event.status == "timeout" and event.error == "no result 1 s after the start"
        assert event.duration_seconds >= 1.0
        assert (await status_of(service, project)).state == "timeout"
        # A marker written after the timeout changes nothing: terminal states are final.
        finish_like_our_worker(bucket, project, 1, {"late.stl": STL})
        [stored] = await stored_job_events(js, project)
        assert stored.status == "timeout"
    assert len(job_events.of(project)) == 1


async def test_a_version_never_started_times_out_at_the_queue_limit_and_is_never_run(
    make_service: ServiceFactory, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    project = f"queued-{unique}"
    async with make_service(
        watcher_queue_timeout_seconds=1.0, watcher_job_timeout_seconds=600
    ) as service:
        await publish_upload(js, project, 1)
        [event] = await job_events.wait_for(project)
        status = await status_of(service, project)
    assert event.status == "timeout"
    assert event.error.startswith("never started: waited 1 s in the queue")
    assert (status.state, status.error) == ("timeout", event.error)
    # the expiry holds the started record: a worker arriving now does not run the version
    assert not start_like_our_worker(bucket, project, 1)
    stored = bucket.get(layout.started_key(project, 1))
    assert stored is not None and started.parse(stored.body).expired


async def test_two_watchers_at_once_publish_exactly_one_event_per_version(
    make_service: ServiceFactory, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    project = f"pair-{unique}"
    versions = range(1, 11)
    async with make_service(watcher_id="a") as a, make_service(watcher_id="b") as b:
        for version in versions:
            await publish_upload(js, project, version)
        watchers = (a.running.watcher, b.running.watcher)
        await wait_until(
            lambda: set().union(*(w.pending for w in watchers)) >= {(project, v) for v in versions},
            what="every version pending on one watcher or the other",
        )
        for version in versions:
            finish_like_our_worker(bucket, project, version, {"part.stl": STL})
        await job_events.wait_for(project, len(versions))
        stored = await stored_job_events(js, project)
    assert sorted(e.version for e in stored) == list(versions)
    assert sorted(e.version for e in job_events.of(project)) == list(versions)


async def test_two_watchers_checking_the_same_versions_still_publish_once(
    make_service: ServiceFactory, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    """Two replicas misconfigured with one watcher id both take every pending version: the
    compare-and-set on the job, not the lease, keeps each decision and event single."""
    project = f"race-{unique}"
    versions = range(1, 11)
    same = {"watcher_id": "twin", "watcher_lease_seconds": 0.6}
    async with make_service(**same) as a, make_service(**same) as b:
        for version in versions:
            await publish_upload(js, project, version)
        everything = {(project, v) for v in versions}
        await wait_until(
            lambda: (
                a.running.watcher.pending >= everything and b.running.watcher.pending >= everything
            ),
            what="both watchers checking every version",
        )
        for version in versions:
            finish_like_our_worker(bucket, project, version, {"part.stl": STL})
        await job_events.wait_for(project, len(versions))
        counters = (a.running.watcher.counters, b.running.watcher.counters)
        await wait_until(
            lambda: sum(c.decided + c.lost_races for c in counters) == 2 * len(versions),
            what="both watchers tried to decide every version",
        )
        stored = await stored_job_events(js, project)
    assert sum(c.decided for c in counters) == len(versions)
    assert sum(c.published for c in counters) == len(versions)
    assert sorted(e.version for e in job_events.of(project)) == list(versions)
    assert sorted(e.version for e in stored) == list(versions)


async def test_a_restarted_watcher_completes_the_versions_pending_before(
    make_service: ServiceFactory, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    project = f"restart-{unique}"
    async with make_service(watcher_id="first") as first:
        for version in (1, 2, 3):
            await publish_upload(js, project, version)
        await wait_until(
            lambda: {(project, v) for v in (1, 2, 3)} <= first.running.watcher.pending,
            what="three versions pending",
        )
    # No watcher runs while the worker finishes.
    for version in (1, 2, 3):
        finish_like_our_worker(bucket, project, version, {"part.stl": STL})
    async with make_service(watcher_id="second") as second:
        events = await job_events.wait_for(project, 3)
        assert sorted(e.version for e in events) == [1, 2, 3]
        assert second.running.watcher.counters.claimed == 3


async def test_versions_of_a_crashed_watcher_are_taken_over_when_its_lease_lapses(
    make_service: ServiceFactory,
    mongo_db: Any,
    bucket: Bucket,
    job_events: JobEvents,
    unique: str,
) -> None:
    """A replica that died holding leases (no orderly release): its versions wait for the lease
    to lapse, then another replica completes them."""
    from services.watcher import domain

    project = f"crash-{unique}"
    jobs = MongoJobs(mongo_db)
    now = dt.datetime.now(dt.UTC)
    for version in (1, 2):
        job = domain.new_job(project, version, uploaded_at=now)
        await jobs.add(job, owner="dead", lease_until=now + dt.timedelta(seconds=1))
        finish_like_our_worker(bucket, project, version, {"part.stl": STL})
    async with make_service(watcher_lease_seconds=0.6):
        events = await job_events.wait_for(project, 2)
    assert sorted(e.version for e in events) == [1, 2]
    assert all(e.status == "completed" for e in events)


async def test_an_event_left_unpublished_by_a_crash_is_published_once_by_the_sweep(
    make_service: ServiceFactory, mongo_db: Any, js: Any, job_events: JobEvents, unique: str
) -> None:
    """A replica decided two versions (compare-and-set done) and died before publishing one
    and before marking the other published. The sweep publishes both; the stream keeps one
    event per version."""
    from services.watcher import domain

    project = f"sweep-{unique}"
    jobs = MongoJobs(mongo_db)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    for version in (1, 2):
        job = domain.new_job(project, version, uploaded_at=long_ago)
        await jobs.add(job, owner="dead", lease_until=long_ago)
        outcome = domain.Outcome(state="completed", finished_at=long_ago)
        assert await jobs.finish(domain.finish(job, outcome, detected_at=long_ago))
    published_before_crash = messages.job_finished(await jobs.get(project, 2))  # type: ignore[arg-type]
    await js.publish(
        messaging.job_subject("completed", project),
        messaging.encode(published_before_crash),
        headers={"Nats-Msg-Id": messaging.job_msg_id(project, 2)},
    )

    async with make_service():
        await job_events.wait_for(project, 3)  # ours for v2, then the sweep's v1 and v2
        await wait_until(
            lambda: _all_published(jobs, project, (1, 2)), what="both marked published"
        )
    stored = await stored_job_events(js, project)
    assert sorted(e.version for e in stored) == [1, 2]


async def _all_published(jobs: MongoJobs, project: str, versions: tuple[int, ...]) -> bool:
    found = [await jobs.get(project, v) for v in versions]
    return all(j is not None and j.event_published for j in found)


SLOW_POLLING = {
    "watcher_poll_interval_seconds": 30.0,
    "watcher_queued_poll_interval_seconds": 30.0,
    "watcher_full_check_interval_seconds": 30.0,
    "watcher_poll_max_interval_seconds": 30.0,
}


async def test_the_start_nudge_stores_the_start_and_the_finish_nudge_decides(
    make_service: ServiceFactory,
    js: Any,
    bucket: Bucket,
    job_events: JobEvents,
    unique: str,
) -> None:
    """With every poll 30 s apart, our worker's two nudges alone move the version: the start
    (a light check reads the started record) and the finish (a full look)."""
    project = f"nudges-{unique}"
    async with make_service(**SLOW_POLLING) as service:
        await publish_upload(js, project, 1)
        await wait_until(
            lambda: service.running.watcher.counters.checks >= 1, what="the first check"
        )
        assert start_like_our_worker(bucket, project, 1)
        await job_events.nc.publish(
            messaging.worker_started_subject(project),
            messaging.encode(events_pb2.WorkerStarted(project=project, version=1)),
        )

        async def processing() -> bool:
            return (await status_of(service, project, 1)).state == "processing"

        await wait_until(processing, within=3.0, what="the start stored")
        finish_like_our_worker(bucket, project, 1, {"part.stl": STL})
        await job_events.nc.publish(
            messaging.worker_finished_subject(project),
            messaging.encode(events_pb2.WorkerFinished(project=project, version=1)),
        )
        [event] = await job_events.wait_for(project, within=3.0)
    assert event.status == "completed"


async def test_the_worker_nudge_wakes_the_check_before_the_next_poll(
    make_service: ServiceFactory,
    js: Any,
    bucket: Bucket,
    job_events: JobEvents,
    unique: str,
) -> None:
    """With polling slowed to 30 s (as the system we replace), the nudge alone brings the
    decision within a second."""
    project = f"nudge-{unique}"
    slow = SLOW_POLLING
    async with make_service(**slow) as service:
        await publish_upload(js, project, 1)
        await wait_until(lambda: (project, 1) in service.running.watcher.pending, what="pending")
        await wait_until(
            lambda: service.running.watcher.counters.checks >= 1, what="the first check"
        )
        finish_like_our_worker(bucket, project, 1, {"part.stl": STL})
        await job_events.nc.publish(
            messaging.worker_finished_subject(project),
            messaging.encode(events_pb2.WorkerFinished(project=project, version=1)),
        )
        [event] = await job_events.wait_for(project, within=3.0)
    assert event.status == "completed"


async def test_watch_status_streams_queued_processing_then_completed(
    service: Service, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    project = f"stream-{unique}"
    call = service.status.WatchStatus(status_pb2.WatchStatusRequest(project=project))
    first = await call.read()
    assert first.state == "no_scripts"

    await publish_upload(js, project, 1)
    queued = await call.read()
    assert (queued.version, queued.state) == (1, "queued")

    assert start_like_our_worker(bucket, project, 1)
    await job_events.nc.publish(
        messaging.worker_started_subject(project),
        messaging.encode(events_pb2.WorkerStarted(project=project, version=1)),
    )
    processing = await call.read()
    assert (processing.version, processing.state) == (1, "processing")

    finish_like_our_worker(bucket, project, 1, {"part.stl": STL, "part.step": STEP})
    completed = await call.read()
    assert (completed.version, completed.state, list(completed.formats)) == (
        1,
        "completed",
        ["step", "stl"],
    )
    call.cancel()


async def test_watch_status_hears_versions_decided_by_another_replica(
    make_service: ServiceFactory, js: Any, bucket: Bucket, unique: str
) -> None:
    project = f"fanout-{unique}"
    async with make_service(watcher_id="a") as a, make_service(watcher_id="b") as b:
        calls = [
            s.status.WatchStatus(status_pb2.WatchStatusRequest(project=project)) for s in (a, b)
        ]
        for call in calls:
            assert (await call.read()).state == "no_scripts"
        await publish_upload(js, project, 1)
        finish_like_our_worker(bucket, project, 1, {"part.stl": STL})
        for call in calls:
            states: list[str] = []
            while not states or states[-1] != "completed":
                states.append((await call.read()).state)
            # each step at most once, in order (a fast worker's start may be missed)
            order = ["queued", "processing", "completed"]
            assert states == sorted(set(states), key=order.index), states
            call.cancel()


async def test_invalid_project_names_are_invalid_argument(service: Service) -> None:
    for bad in ("", "../etc", "a/b", "x" * 65):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await status_of(service, bad)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        call = service.status.WatchStatus(status_pb2.WatchStatusRequest(project=bad))
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            await call.read()
        assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_status_of_a_version_that_does_not_exist_is_not_found(
    service: Service, unique: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await status_of(service, f"none-{unique}", 3)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_is_serving_once_s3_mongodb_and_nats_answer(service: Service) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(service.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_follows_nats_and_the_watcher_carries_on_after_nats_restarts(
    make_service: ServiceFactory,
    nats_server: Any,
    js: Any,
    bucket: Bucket,
    job_events: JobEvents,
    unique: str,
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    project = f"natsout-{unique}"
    async with make_service() as service:
        health = health_pb2_grpc.HealthStub(service.channel)

        async def serving() -> bool:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        await wait_until(serving, what="SERVING")
        nats_server.stop()
        await wait_until(lambda: _not(serving()), what="NOT_SERVING without NATS")
        nats_server.start()
        await wait_until(serving, within=15, what="SERVING again")

        async def uploaded() -> bool:
            try:
                await publish_upload(js, project, 1)
            except Exception:  # the test's own client may still be reconnecting
                return False
            return True

        await wait_until(uploaded, what="upload published after the restart")
        finish_like_our_worker(bucket, project, 1, {"part.stl": STL})
        [event] = await job_events.wait_for(project, within=15)
    assert event.status == "completed"


async def _not(value: Any) -> bool:
    return not await value


async def test_the_watcher_recreates_streams_and_consumer_when_nats_comes_back_empty(
    make_service: ServiceFactory,
    nats_server: Any,
    js: Any,
    bucket: Bucket,
    job_events: JobEvents,
    unique: str,
    tmp_path: Any,
) -> None:
    from cadpipe.devstack import NatsServer

    project = f"natsempty-{unique}"
    async with make_service():
        nats_server.stop()
        with NatsServer(port=nats_server.port, store_dir=str(tmp_path)):

            async def uploaded() -> bool:
                try:
                    await publish_upload(js, project, 1)
                except Exception:  # no stream until the watcher has set it up again
                    return False
                return True

            await wait_until(uploaded, within=20, what="the stream back and the upload in it")
            finish_like_our_worker(bucket, project, 1, {"part.stl": STL})
            [event] = await job_events.wait_for(project, within=15)
            assert event.status == "completed"
        nats_server.start()  # the fixture stops it at teardown


async def test_metrics_count_decisions_events_and_rpcs(
    make_service: ServiceFactory, js: Any, bucket: Bucket, job_events: JobEvents, unique: str
) -> None:
    import httpx

    from cadpipe.devstack import free_port

    project = f"metrics-{unique}"
    port = free_port()
    async with make_service(metrics_port=port) as service:
        await publish_upload(js, project, 1)
        finish_like_our_worker(bucket, project, 1, {"part.stl": STL})
        await job_events.wait_for(project)
        await status_of(service, project)
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(samples['cadpipe_watcher_decisions_total{outcome="completed"}']) == 1
    assert float(samples['cadpipe_watcher_events_published_total{kind="first"}']) == 1
    assert float(samples["cadpipe_watcher_pending"]) == 0
    assert float(samples["cadpipe_watcher_detection_seconds_count"]) == 1
    assert any(k.startswith("cadpipe_s3_requests_total{") for k in samples)
    handled = (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="GetStatus",'
        'grpc_service="cadpipe.v1.StatusService",grpc_type="unary"}'
    )
    assert float(samples[handled]) == 1
