"""Upload throughput: 16 concurrent clients on one project, through REST (gateway -> script
service) and through gRPC (script service), and through REST on as many projects as clients,
beside raw boto3 put_object to the same moto server as the baseline, all in one run.

    .venv/bin/python -m bench.upload_throughput [--uploads N] [--clients C] [--rounds R]
                                                [--rest-client aiohttp|httpx]

moto's S3 server, the script service and the gateway each run in their own process, as they
would deployed; this process is only the clients. The machine is shared and its load drifts
within seconds, so the paths run in rounds, each round between two runs of the baseline, and
a path's ratio is its uploads/s over the mean of the baseline's just before and after it; the
median over the rounds is printed beside each round's. Also prints p50/p95/p99 latency and
each process's CPU per upload.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import grpc
import httpx

from bench.common import cpu_by_process, moto_process, process, summary
from cadpipe.adapters import s3
from cadpipe.devstack import NatsServer, free_port
from cadpipe.v1 import scripts_pb2, scripts_pb2_grpc

BASELINE = "boto3 put_object (baseline)"
SCRIPT = "import FreeCAD\nimport Part\nshape = Part.makeBox(20, 20, 10)\n" + "# padding\n" * 100


async def drive(
    total: int, clients: int, upload: Callable[[int], Awaitable[None]]
) -> tuple[list[float], float]:
    latencies: list[float] = []
    counter = iter(range(total))

    async def client() -> None:
        for i in counter:
            started = time.perf_counter()
            await upload(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, time.perf_counter() - started


@dataclass(frozen=True)
class RestClients:
    """The REST paths' HTTP clients, one connection per client: aiohttp (its parser in C, ~0.5
    ms of CPU per request here) or httpx (~1.5-2.5 ms). They share the machine's two cores with
    the services they measure, so the lighter one leaves the system under test more of them."""

    upload: Callable[[str], Awaitable[None]]
    """Uploads the script to the project named."""
    close: Callable[[], Awaitable[None]]

    @classmethod
    def open(cls, kind: str, base_url: str, clients: int) -> RestClients:
        body = {"script": SCRIPT}
        if kind == "httpx":
            http = httpx.AsyncClient(
                base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=clients)
            )

            async def via_httpx(project: str) -> None:
                reply = await http.post(f"/api/projects/{project}/upload-script", json=body)
                reply.raise_for_status()

            return cls(via_httpx, http.aclose)
        session = aiohttp.ClientSession(
            base_url,
            connector=aiohttp.TCPConnector(limit=clients),
            timeout=aiohttp.ClientTimeout(total=60),
        )

        async def via_aiohttp(project: str) -> None:
            async with session.post(f"/api/projects/{project}/upload-script", json=body) as reply:
                reply.raise_for_status()
                await reply.read()

        return cls(via_aiohttp, session.close)


@dataclass
class Path:
    latencies: list[float]
    wall: float
    cpu: dict[str, float]
    """CPU seconds each process spent on the path's uploads."""


async def measure(
    total: int,
    clients: int,
    bucket: s3.Bucket,
    grpc_port: int,
    http_port: int,
    pids: dict[str, int],
    rest_client: str,
    rounds: int,
) -> tuple[list[Path], list[dict[str, Path]]]:
    """The baseline's runs (one before the first round and one after each) and each round's
    runs of the other paths."""
    body = SCRIPT.encode()

    async def raw(i: int) -> None:
        key = f"baseline/raw/raw_{uuid.uuid4().hex}.py"
        await asyncio.to_thread(
            bucket.client.put_object,
            Bucket=bucket.name,
            Key=key,
            Body=body,
            ContentType="text/x-python",
        )

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = scripts_pb2_grpc.ScriptServiceStub(channel)

    async def via_grpc(i: int) -> None:
        await stub.UploadScript(
            scripts_pb2.UploadScriptRequest(project="bench-grpc", script=SCRIPT)
        )

    rest = RestClients.open(rest_client, f"http://127.0.0.1:{http_port}", clients)

    async def via_rest(i: int) -> None:
        await rest.upload("bench-rest")

    async def via_rest_projects(i: int) -> None:
        await rest.upload(f"bench-rest-{i % clients}")

    paths = {
        BASELINE: raw,
        "gRPC UploadScript": via_grpc,
        "REST upload-script": via_rest,
        f"REST upload-script, {clients} projects": via_rest_projects,
    }

    async def run(upload: Callable[[int], Awaitable[None]]) -> Path:
        before = cpu_by_process(pids)
        latencies, wall = await drive(total, clients, upload)
        spent = {name: s - before[name] for name, s in cpu_by_process(pids).items()}
        return Path(latencies, wall, spent)

    for warm in paths.values():  # connections, first documents
        await drive(clients, clients, warm)
    # The shared machine's load drifts within seconds: each round runs every path once, between
    # two runs of the baseline, and each path is compared with the mean of those two.
    baselines = [await run(raw)]
    measured: list[dict[str, Path]] = []
    for _ in range(rounds):
        measured.append({name: await run(fn) for name, fn in paths.items() if fn is not raw})
        baselines.append(await run(raw))
    await rest.close()
    await channel.close()
    return baselines, measured


def scripts_env(backend_env: dict[str, str], grpc_port: int, mongodb_uri: str) -> dict[str, str]:
    """The script service's environment on 127.0.0.1 (backend_env: S3's and NATS's)."""
    return {
        **backend_env,
        "MONGODB_URI": mongodb_uri,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(grpc_port),
        "METRICS_PORT": "0",
    }


def gateway_env(http_port: int, grpc_port: int) -> dict[str, str]:
    """The gateway's environment on 127.0.0.1, in front of the script service alone."""
    return {
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(http_port),
        "SCRIPTS_ADDR": f"127.0.0.1:{grpc_port}",
        "WATCHER_ADDR": "",
        "MONITORING_ADDR": "",
        "AUTH_MODE": "none",
        "METRICS_PORT": "0",
    }


def main(total: int, clients: int, rest_client: str, rounds: int) -> None:
    grpc_port, http_port = free_port(), free_port()
    with moto_process() as moto, NatsServer() as nats:
        backend_env = {**moto.env, "NATS_URL": nats.url}
        with (
            process(
                ["-m", "services.scripts"],
                scripts_env(backend_env, grpc_port, "mongomock://bench"),
                grpc_port,
            ) as scripts,
            process(
                ["-m", "services.gateway"], gateway_env(http_port, grpc_port), http_port
            ) as gateway,
        ):
            pids = {
                "clients": os.getpid(),
                "moto": moto.pid,
                "scripts": scripts.pid,
                "gateway": gateway.pid,
            }
            baselines, measured = asyncio.run(
                measure(
                    total, clients, moto.bucket, grpc_port, http_port, pids, rest_client, rounds
                )
            )

    report(total, clients, rest_client, pids, baselines, measured)


def report(
    total: int,
    clients: int,
    rest_client: str,
    pids: dict[str, int],
    baselines: list[Path],
    measured: list[dict[str, Path]],
) -> None:
    def rate(path: Path) -> float:
        return total / path.wall

    print(
        f"\nupload throughput: {len(measured)} rounds of {total} uploads per path, {clients}"
        " concurrent clients, one project unless said;"
    )
    print(
        "moto, script service and gateway in their own processes, on this 2-core machine;"
        f" REST clients: {rest_client}"
    )
    print(
        "baseline runs, uploads/s: "
        + ", ".join(f"{rate(path):.1f}" for path in baselines)
        + " (one before each round and one after the last)"
    )
    print("ratio: a path's uploads/s over the mean of the baseline runs before and after it")
    paths = {BASELINE: baselines, **{name: [r[name] for r in measured] for name in measured[0]}}
    for name, runs in paths.items():
        latencies = [latency for path in runs for latency in path.latencies]
        text = summary(name, latencies, sum(path.wall for path in runs))
        if name != BASELINE:
            ratios = [
                rate(path) / ((rate(baselines[i]) + rate(baselines[i + 1])) / 2)
                for i, path in enumerate(runs)
            ]
            text += (
                f"  ratio {statistics.median(ratios):5.2f} (median of "
                + ", ".join(f"{ratio:.2f}" for ratio in ratios)
                + ")"
            )
        print(text)
    print("\nCPU ms per upload, by process (the clients are this process), over all rounds:")
    print(f"{'':<50}" + "".join(f"{name:>10}" for name in pids) + f"{'all':>10}")
    for name, runs in paths.items():
        per = {
            process: 1000 * sum(path.cpu[process] for path in runs) / (total * len(runs))
            for process in pids
        }
        print(
            f"{name:<50}"
            + "".join(f"{per[process]:10.2f}" for process in pids)
            + f"{sum(per.values()):10.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=400)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--rest-client",
        choices=("aiohttp", "httpx"),
        default="aiohttp",
        help="the REST paths' HTTP client (default aiohttp: the lighter load generator)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    main(args.uploads, args.clients, args.rest_client, args.rounds)
