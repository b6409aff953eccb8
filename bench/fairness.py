"""Fair intake: one owner floods the worker with slow scripts, another uploads a trivial script
on a schedule of its own (open loop). Reported: the other owner's upload -> completed latency
(p50, p95, max), with the worker's fairness on (owners take turns for free slots) and off (first
come first served), and the flood's own makespan, to show what fairness costs the flooder.

    .venv/bin/python -m bench.fairness [--flood N] [--sleep S] [--light N] [--interval S]

One real worker (FreeCAD zygote sandbox, CONCURRENCY=1 as on a 2-core machine) on moto's S3
server and nats-server, fresh for each mode. "Upload" is the uploaded event published (the
script is in S3 before); "completed" is the worker's WorkerFinished nudge, published right after
its marker PUT (the watcher's decision adds ~15 ms, bench.watcher_detection).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass

from bench.common import Backends, backends, percentile
from cadpipe import layout, messaging
from cadpipe.ownership import S3_OWNER_METADATA
from cadpipe.settings import NatsSettings
from cadpipe.v1 import events_pb2
from services.worker.bootstrap import start
from services.worker.settings import Settings

TRIVIAL = b"""\
import os
with open(os.path.join(os.environ["FREECAD_OUTPUT"], "t.stl"), "w") as f:
    f.write("solid t\\nendsolid t\\n")
"""
SLOW = "import time\ntime.sleep({seconds})\n" + TRIVIAL.decode()


@dataclass
class Result:
    mode: str
    light: list[float]
    flood_makespan: float

    def line(self) -> str:
        ms = [s * 1000 for s in self.light]
        return (
            f"  {self.mode:<26} n={len(ms):<3} p50={percentile(ms, 50):8.0f} ms"
            f"  p95={percentile(ms, 95):8.0f} ms  max={max(ms):8.0f} ms"
            f"   flood makespan {self.flood_makespan:6.1f} s"
        )


async def run_mode(b: Backends, fair: bool, args: argparse.Namespace) -> Result:
    scratch = tempfile.mkdtemp(prefix="cadpipe-bench-scratch-")
    settings = Settings(
        **b.s3_settings.model_dump(),
        nats_url=b.nats.url,
        grpc_host="127.0.0.1",
        grpc_port=0,
        scratch_root=scratch,
        concurrency=1,
        fair_scheduling=fair,
        intake_buffer=max(16, args.flood + args.light),
    )
    done: dict[tuple[str, int], asyncio.Future[float]] = {}
    loop = asyncio.get_running_loop()

    def expect(project: str, version: int) -> asyncio.Future[float]:
        return done.setdefault((project, version), loop.create_future())

    async def on_finished(msg: object) -> None:
        event = messaging.decode(getattr(msg, "data", b""), events_pb2.WorkerFinished)
        future = expect(event.project, event.version)
        if not future.done():
            future.set_result(time.perf_counter())

    try:
        async with start(settings):
            nc = await messaging.connect(NatsSettings(nats_url=b.nats.url), name="bench")
            js = nc.jetstream()
            await nc.subscribe(messaging.WORKER_FINISHED_SUBJECTS, cb=on_finished)

            async def upload(project: str, version: int, body: bytes, owner: str) -> float:
                key = layout.script_key(project, version)
                await asyncio.to_thread(
                    b.bucket.put,
                    key,
                    body,
                    content_type=layout.SCRIPT_CONTENT_TYPE,
                    metadata={S3_OWNER_METADATA: owner},
                )
                event = events_pb2.ScriptUploaded(
                    project=project,
                    version=version,
                    key=key,
                    sha256=hashlib.sha256(body).hexdigest(),
                    size_bytes=len(body),
                    owner=owner,
                )
                expect(project, version)
                uploaded = time.perf_counter()
                await js.publish(
                    messaging.uploaded_subject(project),
                    messaging.encode(event),
                    headers={"Nats-Msg-Id": messaging.uploaded_msg_id(project, version)},
                )
                return uploaded

            # warm the zygote so the first measured job does not pay for it
            warm = f"warm-{uuid.uuid4().hex[:6]}"
            await upload(warm, 1, TRIVIAL, "warm")
            await asyncio.wait_for(expect(warm, 1), 120)

            flood = f"flood-{uuid.uuid4().hex[:6]}"
            slow = SLOW.format(seconds=args.sleep).encode()
            flood_started = time.perf_counter()
            for version in range(1, args.flood + 1):
                await upload(flood, version, slow, "flooder")
            light = f"light-{uuid.uuid4().hex[:6]}"
            # open loop: the other owner uploads on its own schedule, whatever the worker does
            uploaded_at = []
            for version in range(1, args.light + 1):
                due = flood_started + args.interval / 3 + (version - 1) * args.interval
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                uploaded_at.append(await upload(light, version, TRIVIAL, "someone-else"))
            finished_at = await asyncio.wait_for(
                asyncio.gather(*(expect(light, v) for v in range(1, args.light + 1))), 600
            )
            latencies = [f - u for f, u in zip(finished_at, uploaded_at, strict=True)]
            last = await asyncio.wait_for(
                asyncio.gather(*(expect(flood, v) for v in range(1, args.flood + 1))), 600
            )
            await nc.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mode = "fair (owners in turn)" if fair else "first come first served"
    return Result(mode, latencies, max(last) - flood_started)


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("werkzeug", "botocore", "nats"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    results = []
    for fair in (False, True):
        with backends() as b:
            results.append(await run_mode(b, fair, args))
    print(
        f"\nfair intake: one owner uploads {args.flood} scripts of {args.sleep:g} s at once; "
        f"another uploads a trivial script every {args.interval:g} s ({args.light} of them); "
        "one worker, one slot"
    )
    print("the other owner's upload -> completed latency:")
    for result in results:
        print(result.line())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.fairness")
    parser.add_argument("--flood", type=int, default=12, help="slow scripts of the flooder")
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds each slow script sleeps")
    parser.add_argument("--light", type=int, default=8, help="trivial scripts of the other owner")
    parser.add_argument("--interval", type=float, default=1.5, help="seconds between them")
    asyncio.run(main(parser.parse_args()))
