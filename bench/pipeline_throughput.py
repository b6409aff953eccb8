"""The whole pipeline under load: N clients upload M reference parts through REST as fast as the
API accepts them (the samples: box with hole, the LLM-style cylinder, the bracket, and one that
fails on purpose), and every version is followed to its completion event on NATS. Beside it, in
the same run, bare `freecadcmd` over the same scripts with the same parallelism as the worker.

    .venv/bin/python -m bench.pipeline_throughput [--versions 48] [--clients 8]
        [--runs 10] [--loads 0.25,0.5,0.75,1.0,1.25,1.5,2.0] [--memory-versions 1000]
        [--plot docs/pipeline_latency.png]

moto's S3 server, nats-server, the script service, the watcher, the worker and the gateway each
run in their own process (the script service and the watcher each with their own in-process
mongomock), with their default settings: the worker's concurrency is its default, one FreeCAD
job per core (--concurrency sets it, and bare freecadcmd's parallelism with it). This process
is only the clients and bare freecadcmd. Prints:

* single-version latency (one upload at a time: REST upload -> completion event), as
  bench.e2e_latency measures it;
* sustained versions per second (first upload sent -> last completion event) for the burst,
  its latency p50/p95/p99, the queue wait (uploaded -> the worker starts the job) against the
  run time (the worker's job duration) and detection (job finished -> event), and CPU seconds
  per version of each service (its process tree, FreeCAD jobs included for the worker);
* bare freecadcmd over the same scripts, with the same parallelism, just before and just after
  the burst, and the ratio to the mean of the two;
* latency against offered load (uploads at a fixed rate, as a fraction of the bare freecadcmd
  rate), drawn in a PNG;
* resident memory of each service idle, after the burst, and every 100 versions of
  --memory-versions more (0: skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import pathlib
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from bench.common import (
    cpu_seconds,
    machine_busy_seconds,
    moto_process,
    percentile,
    process,
    process_tree,
    rss_mib,
    summary,
)
from cadpipe import layout, marker, messaging
from cadpipe.adapters import s3
from cadpipe.devstack import NatsServer, free_port
from cadpipe.settings import NatsSettings
from cadpipe.v1 import events_pb2
from services.worker.settings import Settings as WorkerSettings
from services.worker.settings import usable_cores

SAMPLES = pathlib.Path(__file__).parent.parent / "tests" / "samples"
MIX = ("box_with_hole.py", "cylinder_template.py", "bracket.py", "raises.py")
EXPECTED = {"raises.py": "error"}
"""The status each sample ends in (completed unless named)."""
SERVICES = ("scripts", "watcher", "worker", "gateway", "moto", "nats")
WRAPPER = """import os, runpy, sys
try:
    runpy.run_path(os.environ["CADPIPE_BENCH_SCRIPT"], run_name="__main__")
except BaseException as error:
    print("failed:", error, file=sys.stderr)
    sys.exit(1)
"""


# --- what the services were asked ------------------------------------------------------------


def s3_requests(metrics_url: str) -> dict[str, float]:
    """The service's S3 requests so far, by operation (its cadpipe_s3_requests_total)."""
    counts: dict[str, float] = {}
    text = httpx.get(metrics_url, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cadpipe_s3_requests_total":
                operation = sample.labels.get("operation", "?")
                counts[operation] = counts.get(operation, 0.0) + sample.value
    return counts


def wait_serving(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"127.0.0.1:{port} did not become SERVING")
            time.sleep(0.1)


# --- the clients --------------------------------------------------------------------------


@dataclass
class Version:
    project: str
    version: int
    sample: str
    sent: float
    accepted: float = 0.0
    finished: float = 0.0
    event: events_pb2.JobFinished | None = None


@dataclass
class Pipeline:
    api: httpx.AsyncClient
    scripts: dict[str, str]
    done: dict[tuple[str, int], asyncio.Future[tuple[float, events_pb2.JobFinished]]] = field(
        default_factory=dict
    )

    def _future(
        self, project: str, version: int
    ) -> asyncio.Future[tuple[float, events_pb2.JobFinished]]:
        key = (project, version)
        if key not in self.done:
            self.done[key] = asyncio.get_running_loop().create_future()
        return self.done[key]

    async def on_event(self, msg) -> None:  # type: ignore[no-untyped-def]
        event = messaging.decode(msg.data, events_pb2.JobFinished)
        future = self._future(event.project, event.version)
        if not future.done():
            future.set_result((time.perf_counter(), event))

    async def upload(self, project: str, sample: str) -> Version:
        sent = time.perf_counter()
        response = await self.api.post(
            f"/api/projects/{project}/upload-script", json={"script": self.scripts[sample]}
        )
        response.raise_for_status()
        version = Version(project, int(response.json()["script"]["version"]), sample, sent)
        version.accepted = time.perf_counter()
        return version

    async def finish(self, version: Version, within: float = 600) -> Version:
        version.finished, version.event = await asyncio.wait_for(
            self._future(version.project, version.version), within
        )
        expected = EXPECTED.get(version.sample, "completed")
        assert version.event.status == expected, (version.sample, version.event)
        return version

    async def one(self, project: str, sample: str) -> Version:
        return await self.finish(await self.upload(project, sample))

    async def burst(self, total: int, clients: int, tag: str) -> tuple[list[Version], float]:
        """`clients` clients upload `total` versions as fast as the API accepts them (a client
        sends its next upload when the last one is accepted, not completed); then every
        version is followed to its event. Returns them and the wall time, first send -> last
        event."""
        counter = iter(range(total))
        accepted: list[Version] = []

        async def client(c: int) -> None:
            for i in counter:
                accepted.append(await self.upload(f"{tag}-c{c}", MIX[i % len(MIX)]))

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        versions = await asyncio.gather(*(self.finish(v) for v in accepted))
        return list(versions), max(v.finished for v in versions) - started

    async def at_rate(self, total: int, rate: float, tag: str) -> tuple[list[Version], float]:
        """Open loop: an upload every 1/rate seconds, whatever the pipeline's state."""
        started = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(self.one(f"{tag}-{i % 8}", MIX[i % len(MIX)])))
        versions = await asyncio.gather(*tasks)
        return list(versions), max(v.finished for v in versions) - started


def split(
    versions: list[Version], bucket: s3.Bucket
) -> tuple[list[float], list[float], list[float]]:
    """Queue wait (uploaded -> the worker started the job), run (the job's duration: sandbox,
    FreeCAD, storing the outputs) and the rest (job finished -> event received: marker,
    detection, event), in seconds, from each version's processed marker."""
    wait, run, rest = [], [], []
    clock_offset = time.time() - time.perf_counter()
    for v in versions:
        assert v.event is not None
        stored = bucket.get(layout.marker_key(v.project, v.version))
        assert stored is not None, (v.project, v.version)
        found = marker.parse(stored.body)
        started = dt.datetime.fromisoformat(found.started_at).timestamp()
        uploaded = v.event.uploaded_at.ToDatetime(dt.UTC).timestamp()
        wait.append(max(0.0, started - uploaded))
        run.append(found.duration_seconds)
        rest.append(max(0.0, v.finished + clock_offset - started - found.duration_seconds))
    return wait, run, rest


# --- bare freecadcmd ------------------------------------------------------------------------


def bare_freecadcmd(total: int, parallel: int, freecadcmd: str) -> tuple[list[float], float]:
    """The same scripts, `parallel` freecadcmd processes at a time, each with an output
    directory of its own; a script's exception fails its run (exit 1) as in cadpipe."""
    with tempfile.TemporaryDirectory(prefix="cadpipe-bench-bare-") as tmp:
        wrapper = pathlib.Path(tmp, "run.py")
        wrapper.write_text(WRAPPER)

        def one(i: int) -> float:
            sample = MIX[i % len(MIX)]
            out = pathlib.Path(tmp, f"out{i}")
            out.mkdir()
            started = time.perf_counter()
            done = subprocess.run(
                [freecadcmd, str(wrapper)],
                env={
                    **os.environ,
                    "FREECAD_OUTPUT": str(out),
                    "CADPIPE_BENCH_SCRIPT": str(SAMPLES / sample),
                },
                capture_output=True,
                check=False,
                timeout=300,
            )
            assert (done.returncode != 0) == (sample in EXPECTED), (sample, done.stderr[-500:])
            return time.perf_counter() - started

        started = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            latencies = list(pool.map(one, range(total)))
        return latencies, time.perf_counter() - started


# --- the run --------------------------------------------------------------------------------


def plot(path: str, rows: list[tuple[float, float, float, float, float]], bare_rate: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offered = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for column, label in ((2, "p50"), (3, "p95"), (4, "p99")):
        ax.plot(offered, [r[column] for r in rows], marker="o", label=f"latency {label}")
    ax.axvline(bare_rate, color="grey", linestyle="--", label="bare freecadcmd rate")
    ax.set_xlabel("offered load (uploads/s)")
    ax.set_ylabel("upload -> completion event (s)")
    ax.set_title("cadpipe: latency against offered load (reference part mix)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def drive(
    args: argparse.Namespace,
    pids: dict[str, int],
    api_url: str,
    nats_url: str,
    bucket: s3.Bucket,
    metrics: dict[str, str],
) -> None:
    scripts = {name: (SAMPLES / name).read_text() for name in MIX}
    nc = await messaging.connect(NatsSettings(nats_url=nats_url), name="bench-pipeline")
    parallel = args.concurrency
    async with httpx.AsyncClient(
        base_url=api_url, timeout=120, limits=httpx.Limits(max_connections=64)
    ) as api:
        pipeline = Pipeline(api, scripts)
        await nc.subscribe("cadpipe.jobs.*.*", cb=pipeline.on_event)
        for sample in MIX:  # warm-up: connections, the zygote's first fork, first documents
            await pipeline.one("bench-warm", sample)
        idle_rss = {name: rss_mib(pid, tree=name == "worker") for name, pid in pids.items()}

        single = [await pipeline.one(f"bench-single-{i}", MIX[0]) for i in range(args.runs)]

        freecadcmd = WorkerSettings.model_fields["freecadcmd"].default
        # bare freecadcmd just before and just after the burst: the machine is shared, and its
        # load drifts; the ratio is against the mean of the two
        bare_first, bare_wall_first = await asyncio.to_thread(
            bare_freecadcmd, args.versions, parallel, freecadcmd
        )
        requests_before = {name: s3_requests(url) for name, url in metrics.items()}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        machine_before = machine_busy_seconds()
        burst_task = asyncio.ensure_future(
            pipeline.burst(args.versions, args.clients, "bench-burst")
        )
        await asyncio.sleep(1.0)
        worker_tree = len(process_tree(pids["worker"]))
        burst, wall = await burst_task
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        machine = machine_busy_seconds() - machine_before
        requests = {name: s3_requests(url) for name, url in metrics.items()}
        for name, counts in requests.items():
            for operation, before in requests_before[name].items():
                counts[operation] = counts.get(operation, 0.0) - before
        after_rss = {name: rss_mib(pid, tree=name == "worker") for name, pid in pids.items()}

        bare_second, bare_wall_second = await asyncio.to_thread(
            bare_freecadcmd, args.versions, parallel, freecadcmd
        )
        bare_latencies = bare_first + bare_second
        bare_rates = (args.versions / bare_wall_first, args.versions / bare_wall_second)
        bare_rate = sum(bare_rates) / 2

        loads: list[tuple[float, float, float, float, float]] = []
        for fraction in args.loads:
            rate = fraction * bare_rate
            count = max(8, int(rate * args.load_seconds))
            done, load_wall = await pipeline.at_rate(
                count, rate, f"bench-load-{round(fraction * 100)}"
            )
            lat = [v.finished - v.sent for v in done]
            loads.append(
                (
                    rate,
                    count / load_wall,
                    percentile(lat, 50),
                    percentile(lat, 95),
                    percentile(lat, 99),
                )
            )

        memory_rows: list[tuple[int, dict[str, float]]] = []
        if args.memory_versions:
            made = 0
            while made < args.memory_versions:
                step = min(100, args.memory_versions - made)
                await pipeline.burst(step, args.clients, f"bench-mem-{made}")
                made += step
                memory_rows.append(
                    (made, {n: rss_mib(p, tree=n == "worker") for n, p in pids.items()})
                )
    await nc.close()

    rate = args.versions / wall
    print(
        f"\npipeline throughput: {args.versions} versions ({', '.join(MIX)} in turn), "
        f"{args.clients} clients, worker concurrency {parallel} (its default here: "
        f"{usable_cores()}, on {os.cpu_count()} cores); every service in its own process"
    )
    print(
        summary(
            "single version, REST upload -> completion event", [v.finished - v.sent for v in single]
        )
    )
    print(summary("burst: upload sent -> completion event", [v.finished - v.sent for v in burst]))
    print(summary("  upload accepted (REST)", [v.accepted - v.sent for v in burst]))
    wait, run, rest = split(burst, bucket)
    print(summary("  queue wait (uploaded -> job started)", wait))
    print(summary("  run (the worker's job: sandbox, FreeCAD, storing)", run))
    print(summary("  job finished -> event (marker, detection, event)", rest))
    print(summary("bare freecadcmd, same scripts, same parallelism", bare_latencies))
    print(
        f"sustained: cadpipe {rate:6.2f} versions/s, bare freecadcmd {bare_rate:6.2f} runs/s"
        f" ({bare_rates[0]:.2f} before the burst, {bare_rates[1]:.2f} after);"
        f" ratio {rate / bare_rate:5.2f}"
    )
    print(f"(worker process tree mid-burst: {worker_tree} processes)")
    print("CPU seconds per version during the burst, by service (its process tree):")
    print("  " + "  ".join(f"{n} {cpu[n] / args.versions:6.3f}" for n in pids))
    print(
        f"  services {sum(cpu.values()) / args.versions:6.3f}; the whole machine"
        f" {machine / args.versions:6.3f} (FreeCAD jobs, this client, and other users' work:"
        " the zygote does not wait for its jobs, so their CPU is in no service's tree)"
    )
    print("S3 requests per version during the burst, by service (its S3 client; all go to moto):")
    for name, counts in requests.items():
        by_operation = ", ".join(
            f"{op} {n / args.versions:.1f}" for op, n in sorted(counts.items()) if n
        )
        print(f"  {name:8} {sum(counts.values()) / args.versions:6.1f}  ({by_operation})")
    print("latency against offered load (open loop):")
    print(f"  {'offered/s':>10} {'achieved/s':>11} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7}")
    for offered, achieved, p50, p95, p99 in loads:
        print(f"  {offered:10.2f} {achieved:11.2f} {p50:7.2f} {p95:7.2f} {p99:7.2f}")
    if args.plot and loads:
        plot(args.plot, loads, bare_rate)
        print(f"  plotted to {args.plot}")
    print("resident memory, MiB (worker: with its zygote and jobs):")
    print("  " + f"{'':>16}" + "".join(f"{n:>9}" for n in pids))
    print("  " + f"{'idle':>16}" + "".join(f"{idle_rss[n]:9.1f}" for n in pids))
    print("  " + f"{'after burst':>16}" + "".join(f"{after_rss[n]:9.1f}" for n in pids))
    for made, row in memory_rows:
        print("  " + f"{f'+{made} versions':>16}" + "".join(f"{row[n]:9.1f}" for n in pids))


def main(args: argparse.Namespace) -> None:
    scripts_port, watcher_port, worker_port, http_port = (free_port() for _ in range(4))
    metrics_ports = {name: free_port() for name in ("scripts", "watcher", "worker")}
    with moto_process() as moto, NatsServer() as nats:
        bucket = moto.bucket
        common = {
            **moto.env,
            "NATS_URL": nats.url,
            "GRPC_HOST": "127.0.0.1",
        }
        with (
            process(
                ["-m", "services.scripts"],
                {
                    **common,
                    "MONGODB_URI": "mongomock://scripts",
                    "GRPC_PORT": str(scripts_port),
                    "METRICS_PORT": str(metrics_ports["scripts"]),
                },
                scripts_port,
            ) as scripts,
            process(
                ["-m", "services.watcher"],
                {
                    **common,
                    "MONGODB_URI": "mongomock://watcher",
                    "GRPC_PORT": str(watcher_port),
                    "SCRIPTS_ADDR": f"127.0.0.1:{scripts_port}",
                    "METRICS_PORT": str(metrics_ports["watcher"]),
                },
                watcher_port,
            ) as watcher,
            process(
                ["-m", "services.worker"],
                {
                    **common,
                    "GRPC_PORT": str(worker_port),
                    "METRICS_PORT": str(metrics_ports["worker"]),
                    "CONCURRENCY": str(args.concurrency),
                },
                worker_port,
            ) as worker,
            process(
                ["-m", "services.gateway"],
                {
                    "HTTP_HOST": "127.0.0.1",
                    "HTTP_PORT": str(http_port),
                    "SCRIPTS_ADDR": f"127.0.0.1:{scripts_port}",
                    "WATCHER_ADDR": f"127.0.0.1:{watcher_port}",
                    "MONITORING_ADDR": "",
                    "AUTH_MODE": "none",
                    "METRICS_PORT": "0",
                },
                http_port,
            ) as gateway,
        ):
            for port in (scripts_port, watcher_port, worker_port):
                wait_serving(port)
            pids = {
                "scripts": scripts.pid,
                "watcher": watcher.pid,
                "worker": worker.pid,
                "gateway": gateway.pid,
                "moto": moto.pid,
                "nats": nats.pid,
            }
            metrics = {
                name: f"http://127.0.0.1:{port}/metrics" for name, port in metrics_ports.items()
            }
            asyncio.run(
                drive(args, pids, f"http://127.0.0.1:{http_port}", nats.url, bucket, metrics)
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--versions", type=int, default=48, help="versions in the burst")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=usable_cores(),
        help="the worker's CONCURRENCY and bare freecadcmd's parallelism (default: the worker's"
        " default, one per core)",
    )
    parser.add_argument("--runs", type=int, default=10, help="single-version runs")
    parser.add_argument(
        "--loads",
        type=lambda text: [float(v) for v in text.split(",") if v],
        default=[0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0],
        help="offered loads, as fractions of bare freecadcmd's rate",
    )
    parser.add_argument("--load-seconds", type=float, default=6.0, help="length of each load")
    parser.add_argument(
        "--memory-versions",
        type=int,
        default=200,
        help="versions after the burst, RSS sampled every 100 (1000 for the full check)",
    )
    parser.add_argument(
        "--plot",
        default=str(pathlib.Path(tempfile.gettempdir()) / "cadpipe-pipeline-latency.png"),
        help="PNG of latency against offered load; '' for none (docs/pipeline_latency.png is"
        " one run's)",
    )
    main(parser.parse_args())
