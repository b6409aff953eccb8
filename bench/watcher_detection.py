"""Watcher detection latency and S3 polling cost, on moto's S3 server and a real nats-server.

    .venv/bin/python -m bench.watcher_detection [--runs N] [--pending N] [--seconds S]

Detection latency: a version is uploaded (ScriptUploaded on JetStream), its worker "runs" for a
random 0.3-1.0 s, then its marker is written to S3 (the clock starts when the PUT returns) and
the clock stops when the JobFinished event arrives on NATS. Measured with the watcher's default
settings, polling alone and with our worker's nudge (core NATS, right after the marker). No
started record is written: polling alone is how a version of an older-contract worker is seen
(at the watcher's full looks), the nudge how our worker's is.

S3 cost: S3 requests the watcher sends per pending version per second (counted on its boto3
client), for versions just uploaded and for versions pending for two minutes (the backoff).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import random
import time
import uuid
from collections import Counter
from typing import Any

from bench.common import backends, summary
from cadpipe import layout, messaging
from cadpipe.adapters.s3 import Bucket
from cadpipe.marker import Marker
from cadpipe.v1 import events_pb2
from services.watcher.bootstrap import start
from services.watcher.settings import Settings


class Completions:
    """Arrival time of each completion event, by (project, version)."""

    def __init__(self) -> None:
        self.arrived: dict[tuple[str, int], float] = {}
        self._waiters: dict[tuple[str, int], asyncio.Future[float]] = {}

    async def on_message(self, msg: Any) -> None:
        now = time.perf_counter()
        event = messaging.decode(msg.data, events_pb2.JobFinished)
        key = (event.project, event.version)
        self.arrived.setdefault(key, now)
        waiter = self._waiters.pop(key, None)
        if waiter and not waiter.done():
            waiter.set_result(now)

    async def wait(self, project: str, version: int, within: float = 30.0) -> float:
        key = (project, version)
        if key in self.arrived:
            return self.arrived[key]
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters[key] = future
        return await asyncio.wait_for(future, within)


async def upload(js: Any, project: str, version: int, uploaded_at: dt.datetime) -> None:
    event = events_pb2.ScriptUploaded(
        project=project, version=version, key=layout.script_key(project, version)
    )
    event.uploaded_at.FromDatetime(uploaded_at)
    await js.publish(
        messaging.uploaded_subject(project),
        messaging.encode(event),
        headers={"Nats-Msg-Id": messaging.uploaded_msg_id(project, version)},
    )


async def wait_pending(watcher: Any, keys: set[tuple[str, int]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not keys <= watcher.pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"versions not pending after {within} s")
        await asyncio.sleep(0.005)


async def detection(
    running: Any,
    bucket: Bucket,
    js: Any,
    nc: Any,
    completions: Completions,
    runs: int,
    *,
    nudge: bool,
) -> tuple[list[float], float]:
    """Latencies (s) and S3 requests per decided version."""
    project = f"bench-{'nudge' if nudge else 'poll'}-{uuid.uuid4().hex[:6]}"
    latencies: list[float] = []
    requests_before = REQUESTS["total"]
    for version in range(1, runs + 1):
        await upload(js, project, version, dt.datetime.now(dt.UTC))
        await wait_pending(running.watcher, {(project, version)})
        await asyncio.sleep(random.uniform(0.3, 1.0))  # the worker runs the script
        marker = Marker(status="completed", project=project, version=version, exit_reason="ok")
        await asyncio.to_thread(
            bucket.put,
            layout.marker_key(project, version),
            marker.to_json(),
            content_type="application/json",
        )
        written = time.perf_counter()
        if nudge:
            await nc.publish(
                messaging.worker_finished_subject(project),
                messaging.encode(events_pb2.WorkerFinished(project=project, version=version)),
            )
        latencies.append(await completions.wait(project, version) - written)
    return latencies, (REQUESTS["total"] - requests_before) / runs


async def polling_cost(
    running: Any,
    bucket: Bucket,
    js: Any,
    completions: Completions,
    pending: int,
    seconds: float,
    *,
    age: float,
) -> tuple[float, Counter[str]]:
    """S3 requests per pending version per second over `seconds`, for versions `age` s old."""
    project = f"bench-cost-{uuid.uuid4().hex[:6]}"
    uploaded_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age)
    for version in range(1, pending + 1):
        await upload(js, project, version, uploaded_at)
    await wait_pending(running.watcher, {(project, v) for v in range(1, pending + 1)})
    before = Counter(REQUESTS)
    await asyncio.sleep(seconds)
    delta = Counter(REQUESTS)
    delta.subtract(before)
    # Finish them, so the next measurement counts its own versions only.
    for version in range(1, pending + 1):
        body = Marker(status="completed", project=project, version=version).to_json()
        await asyncio.to_thread(
            bucket.put,
            layout.marker_key(project, version),
            body,
            content_type="application/json",
        )
    for version in range(1, pending + 1):
        await completions.wait(project, version)
    return delta["total"] / (pending * seconds), delta


REQUESTS: Counter[str] = Counter()


def count_request(event_name: str, **_: Any) -> None:
    # before-send.s3.<Operation>: one HTTP request to S3 (retries included).
    REQUESTS["total"] += 1
    REQUESTS[event_name.rsplit(".", 1)[-1]] += 1


async def main(runs: int, pending: int, seconds: float) -> None:
    with backends() as b:
        fields: dict[str, Any] = {
            **b.s3_settings.model_dump(),
            "mongodb_uri": f"mongomock://bench-{uuid.uuid4().hex}",
            "nats_url": b.nats.url,
            "grpc_host": "127.0.0.1",
            "grpc_port": 0,
            "shutdown_grace_seconds": 0.5,
        }
        settings = Settings(**fields)
        async with start(settings) as running:
            running.bucket.client.meta.events.register("before-send.s3", count_request)
            nc = await messaging.connect(settings, name="bench")
            js = nc.jetstream()
            completions = Completions()
            await nc.subscribe(messaging.JOB_SUBJECTS, cb=completions.on_message)
            await nc.flush()

            print(
                f"watcher defaults: poll {settings.watcher_poll_interval_seconds * 1000:.0f} ms "
                f"(queued {settings.watcher_queued_poll_interval_seconds * 1000:.0f} ms, "
                f"full looks {settings.watcher_full_check_interval_seconds * 1000:.0f} ms), "
                f"backoff {settings.watcher_poll_backoff_ratio:g} x age, "
                f"max {settings.watcher_poll_max_interval_seconds:g} s; "
                f"{runs} runs each, marker 0.3-1.0 s after the upload"
            )
            polled, polled_requests = await detection(
                running, b.bucket, js, nc, completions, runs, nudge=False
            )
            print(summary("detection, polling only", polled))
            nudged, nudged_requests = await detection(
                running, b.bucket, js, nc, completions, runs, nudge=True
            )
            print(summary("detection, with the worker nudge", nudged))
            print(
                f"S3 requests per decided version (upload to event): polling "
                f"{polled_requests:.1f}, with nudge {nudged_requests:.1f}"
            )

            young, young_ops = await polling_cost(
                running, b.bucket, js, completions, pending, seconds, age=0
            )
            print(
                f"S3 requests per pending version per second, first {seconds:g} s after upload: "
                f"{young:.2f}  ({_ops(young_ops)})"
            )
            old, old_ops = await polling_cost(
                running, b.bucket, js, completions, pending, seconds, age=120
            )
            print(
                f"S3 requests per pending version per second, pending for 2 min:        "
                f"{old:.2f}  ({_ops(old_ops)})"
            )
            await nc.close()


def _ops(counts: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items()) if name != "total")


def cli() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="versions per latency series")
    parser.add_argument("--pending", type=int, default=20, help="pending versions for the cost")
    parser.add_argument("--seconds", type=float, default=5.0, help="cost measurement window")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.pending, args.seconds))


if __name__ == "__main__":
    cli()
