"""End-to-end latency of the whole pipeline: REST upload of the reference part -> the version's
completion event received on NATS (cadpipe.jobs.*.{project}), over N runs, everything started
in this process (services/allinone/stack.py) on moto's S3 server, nats-server and mongomock.

    .venv/bin/python -m bench.e2e_latency [--runs 20]

Also prints the status the gateway reports right after the event (must be completed), and
the split of each run: upload RPC, worker's FreeCAD run (marker duration), and detection
(marker's finished_at -> event received). The system we replace polled every 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import pathlib
import time
import uuid

import httpx

from bench.common import backends, summary
from cadpipe import messaging
from cadpipe.v1 import events_pb2
from services.allinone import stack

SCRIPT = (
    pathlib.Path(__file__).parent.parent / "tests" / "samples" / "box_with_hole.py"
).read_text()


async def main(runs: int) -> None:
    with backends() as b:
        s3 = {
            "s3_bucket": b.bucket.name,
            "s3_endpoint_url": b.moto.endpoint_url,
            "aws_access_key_id": b.moto.access_key,
            "aws_secret_access_key": b.moto.secret_key,
        }
        where = stack.Backends(
            s3=s3, nats_url=b.nats.url, mongodb_uri=f"mongomock://bench-{uuid.uuid4().hex}"
        )
        async with stack.start(where) as running:
            nc = await messaging.connect(messaging.NatsSettings(nats_url=b.nats.url), name="bench")
            headers = (
                {"Authorization": f"Bearer {running.user_token}"} if running.user_token else {}
            )
            async with httpx.AsyncClient(
                base_url=running.api_url, headers=headers, timeout=60
            ) as client:
                total: list[float] = []
                upload: list[float] = []
                freecad: list[float] = []
                detection: list[float] = []
                for run in range(runs + 1):  # the first run warms up and is not counted
                    project = f"bench-e2e-{run}"
                    finished: asyncio.Future[tuple[float, events_pb2.JobFinished]] = (
                        asyncio.get_running_loop().create_future()
                    )

                    async def on_event(msg, fut=finished) -> None:  # type: ignore[no-untyped-def]
                        if not fut.done():
                            fut.set_result(
                                (
                                    time.perf_counter(),
                                    messaging.decode(msg.data, events_pb2.JobFinished),
                                )
                            )

                    sub = await nc.subscribe(f"cadpipe.jobs.*.{project}", cb=on_event)
                    started = time.perf_counter()
                    response = await client.post(
                        f"/api/projects/{project}/upload-script", json={"script": SCRIPT}
                    )
                    uploaded = time.perf_counter()
                    response.raise_for_status()
                    received, event = await asyncio.wait_for(finished, 60)
                    received_wall = dt.datetime.now(dt.UTC)
                    await sub.unsubscribe()
                    assert event.status == "completed", event
                    status = (await client.get(f"/api/projects/{project}/status")).json()
                    assert status["state"] == "completed", status
                    if run == 0:
                        continue
                    total.append(received - started)
                    upload.append(uploaded - started)
                    freecad.append(event.duration_seconds)
                    detection.append(
                        (received_wall - event.finished_at.ToDatetime(dt.UTC)).total_seconds()
                    )
            await nc.close()

    print(
        f"\nend-to-end latency, reference part, {runs} runs"
        " (REST upload -> completion event on NATS)"
    )
    print(summary("upload -> completion event", total))
    print(summary("  of which: REST upload", upload))
    print(summary("  of which: FreeCAD run in sandbox", freecad))
    print(summary("  FreeCAD done -> event (uploads, marker, detection)", detection))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(main(parser.parse_args().runs))
