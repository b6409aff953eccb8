"""What the worker adds to FreeCAD's own run time, per job: from the `uploaded` event published
on NATS to the processed marker in S3, for the reference part and for an empty script, beside
`freecadcmd` run directly on the same scripts, all in one run. Both sandbox modes are measured
(zygote: jobs forked from a process with FreeCAD imported; fresh: an interpreter per job).

    .venv/bin/python -m bench.worker_overhead [--runs N]

The end of a job is taken when the worker's WorkerFinished nudge arrives, which the worker
publishes right after its marker PUT has returned; the marker is then checked to be in S3.
Jobs run one at a time (latency, not throughput). Targets: the worker adds at most 150 ms to
freecadcmd's time; about 1 s from upload to completion for a simple part.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.common import Backends, backends, percentile
from cadpipe import layout, messaging
from cadpipe.settings import NatsSettings
from cadpipe.v1 import events_pb2
from services.worker.bootstrap import start
from services.worker.settings import Settings

SAMPLES = Path(__file__).resolve().parents[1] / "tests" / "samples"
SCRIPTS = {
    "reference part": (SAMPLES / "box_with_hole.py").read_bytes(),
    "empty script": b"# nothing to do\n",
}
WARMUP = 2
TARGET_OVERHEAD_MS = 150.0


@dataclass
class Series:
    label: str
    seconds: list[float]

    def p(self, q: float) -> float:
        return percentile([s * 1000 for s in self.seconds], q)

    def line(self) -> str:
        return (
            f"  {self.label:<38} n={len(self.seconds):<3} "
            f"p50={self.p(50):7.1f} ms  p95={self.p(95):7.1f} ms"
        )


def freecadcmd_runs(script: bytes, runs: int) -> Series:
    """freecadcmd on the script, as a person would run it: interpreter, FreeCAD, the script."""
    work = Path(tempfile.mkdtemp(prefix="cadpipe-bench-"))
    try:
        path = work / "script.py"
        path.write_bytes(script)
        out = work / "out"
        seconds = []
        for i in range(WARMUP + runs):
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            started = time.perf_counter()
            subprocess.run(
                ["freecadcmd", str(path)],
                env={**os.environ, "FREECAD_OUTPUT": str(out)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )
            if i >= WARMUP:
                seconds.append(time.perf_counter() - started)
        return Series("freecadcmd, directly", seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


Measured = dict[str, tuple[Series, Series, Series]]


def sandbox_seconds(log: str) -> float:
    """The sandbox's own wall time (fork, isolation, FreeCAD running the script, the geometry
    report), from the log header: 'duration: 0.126 s (script 0.070 s, ...'."""
    match = re.search(r"\(script ([0-9.]+) s", log)
    assert match, "no sandbox time in the log"
    return float(match.group(1))


async def worker_runs(b: Backends, mode: str, scripts: dict[str, bytes], runs: int) -> Measured:
    """Per script: end-to-end seconds (event -> marker), the worker's job duration (as its
    marker records it) and the sandbox's run within it."""
    scratch = tempfile.mkdtemp(prefix="cadpipe-bench-scratch-")
    settings = Settings(
        **b.s3_settings.model_dump(),
        nats_url=b.nats.url,
        grpc_host="127.0.0.1",
        grpc_port=0,
        sandbox_mode=mode,  # type: ignore[arg-type]
        scratch_root=scratch,
        consumer_name=f"bench-{mode}",
    )
    results: Measured = {}
    try:
        async with start(settings):
            nc = await messaging.connect(NatsSettings(nats_url=b.nats.url), name="bench")
            js = nc.jetstream()
            waiting: dict[tuple[str, int], asyncio.Future[float]] = {}

            async def on_finished(msg: object) -> None:
                arrived = time.perf_counter()
                data = getattr(msg, "data", b"")
                event = messaging.decode(data, events_pb2.WorkerFinished)
                future = waiting.pop((event.project, event.version), None)
                if future is not None and not future.done():
                    future.set_result(arrived)

            await nc.subscribe(messaging.WORKER_FINISHED_SUBJECTS, cb=on_finished)
            for label, body in scripts.items():
                project = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
                end_to_end: list[float] = []
                in_worker: list[float] = []
                in_sandbox: list[float] = []
                for version in range(1, WARMUP + runs + 1):
                    key = layout.script_key(project, version)
                    await asyncio.to_thread(
                        b.bucket.put, key, body, content_type=layout.SCRIPT_CONTENT_TYPE
                    )
                    event = events_pb2.ScriptUploaded(
                        project=project,
                        version=version,
                        key=key,
                        sha256=hashlib.sha256(body).hexdigest(),
                        size_bytes=len(body),
                    )
                    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                    waiting[(project, version)] = done
                    started = time.perf_counter()
                    await js.publish(messaging.uploaded_subject(project), messaging.encode(event))
                    finished = await asyncio.wait_for(done, 120)
                    stored = await asyncio.to_thread(
                        b.bucket.get, layout.marker_key(project, version)
                    )
                    assert stored is not None, "the nudge came before the marker"
                    if version > WARMUP:
                        marker = json.loads(stored.body)
                        end_to_end.append(finished - started)
                        in_worker.append(marker["duration_seconds"])
                        log = await asyncio.to_thread(b.bucket.get, marker["log_key"])
                        assert log is not None
                        in_sandbox.append(sandbox_seconds(log.body.decode()))
                results[label] = (
                    Series(f"worker, {mode}: event -> marker", end_to_end),
                    Series("  job in the worker (S3 reads, writes)", in_worker),
                    Series("    sandbox run in the job", in_sandbox),
                )
            await nc.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return results


async def main(runs: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("werkzeug", "botocore", "nats"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with backends() as b:
        measured = {m: await worker_runs(b, m, SCRIPTS, runs) for m in ("zygote", "fresh")}
    direct = {label: freecadcmd_runs(body, runs) for label, body in SCRIPTS.items()}

    print(f"\nworker overhead ({runs} jobs per line, one at a time, after {WARMUP} warm-up jobs)")
    for label in SCRIPTS:
        print(f"\n{label}")
        print(direct[label].line())
        for mode in ("zygote", "fresh"):
            for series in measured[mode][label]:
                print(series.line())
    print(f"\noverhead = worker p50 - freecadcmd p50 (target: at most {TARGET_OVERHEAD_MS:.0f} ms)")
    for label in SCRIPTS:
        for mode in ("zygote", "fresh"):
            end_to_end = measured[mode][label][0]
            overhead = end_to_end.p(50) - direct[label].p(50)
            p95 = end_to_end.p(95) - direct[label].p(95)
            verdict = "ok" if overhead <= TARGET_OVERHEAD_MS else "OVER TARGET"
            figures = f"{overhead:+7.1f} ms at p50, {p95:+7.1f} ms at p95"
            print(f"  {label:<16} {mode:<7} {figures}  {verdict}")
    print("\nwhat the worker adds around the sandbox run (event -> marker minus sandbox, p50)")
    for label in SCRIPTS:
        for mode in ("zygote", "fresh"):
            end_to_end, _, in_sandbox = measured[mode][label]
            around = [e - s for e, s in zip(end_to_end.seconds, in_sandbox.seconds, strict=True)]
            print(f"  {label:<16} {mode:<7} {percentile([a * 1000 for a in around], 50):7.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.worker_overhead")
    parser.add_argument("--runs", type=int, default=20, help="measured jobs per script and path")
    asyncio.run(main(parser.parse_args().runs))
