"""A/B of a change to the upload path: the script service and gateway of a base commit beside
those of the working tree, under the same upload load, in alternating rounds.

    .venv/bin/python -m bench.upload_ab [--base REF] [--path grpc|rest|rest-projects]
                                        [--rounds R] [--uploads N] [--clients C]

The base (default HEAD) is checked out into a temporary git worktree, with its generated
protobuf code. One moto server and one nats-server serve both sides; each side runs its own
script service and gateway (so its own mongomock), and every round runs both sides, the one
that goes first alternating. Printed: each process's CPU per upload (ms) and the uploads/s, by
round and as medians over the rounds, and the script service's CPU per upload of the working
tree against the base's within each round (the machine's load drifts between rounds, less
within one).

CPU per upload is the figure to compare: bench.upload_throughput's ratios move by +-15 % from
run to run on this shared machine. Its resolution is still coarse: in an A/A run (`--base HEAD`
on a clean tree) single rounds differed by -17 % to +17 %, and the median over 20 rounds by
-2 % (over 8: +4 %). A change worth less than about 5 % does not show here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.common import cpu_by_process, moto_process, process
from bench.upload_throughput import SCRIPT, RestClients, drive, gateway_env, scripts_env
from cadpipe.devstack import NatsServer, free_port
from cadpipe.v1 import scripts_pb2, scripts_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = ("scripts", "gateway", "moto", "clients")


@dataclass(frozen=True)
class Side:
    name: str
    tree: Path
    grpc_port: int
    http_port: int
    pids: dict[str, int]


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """`ref` checked out in a temporary directory, its protobuf code generated."""
    with tempfile.TemporaryDirectory(prefix="cadpipe-ab-") as parent:
        tree = Path(parent) / "base"
        git = ["git", "-C", str(ROOT)]
        subprocess.run([*git, "worktree", "add", "--detach", str(tree), ref], check=True)
        try:
            subprocess.run([sys.executable, str(tree / "scripts" / "gen_protos.py")], check=True)
            yield tree
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(tree)], check=False)


def start_side(
    stack: contextlib.ExitStack, name: str, tree: Path, backend_env: dict[str, str], moto_pid: int
) -> Side:
    grpc_port, http_port = free_port(), free_port()
    checkout = {"PYTHONPATH": str(tree)}  # with cwd: `-m` imports the tree's own packages
    scripts = stack.enter_context(
        process(
            ["-m", "services.scripts"],
            {**scripts_env(backend_env, grpc_port, f"mongomock://ab-{name}"), **checkout},
            grpc_port,
            cwd=tree,
        )
    )
    gateway = stack.enter_context(
        process(
            ["-m", "services.gateway"],
            {**gateway_env(http_port, grpc_port), **checkout},
            http_port,
            cwd=tree,
        )
    )
    pids = {"scripts": scripts.pid, "gateway": gateway.pid, "moto": moto_pid}
    return Side(name, tree, grpc_port, http_port, {**pids, "clients": os.getpid()})


def uploader(
    path: str, side: Side, clients: int, stack: contextlib.AsyncExitStack
) -> Callable[[int], Awaitable[None]]:
    if path == "grpc":
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{side.grpc_port}")
        stack.push_async_callback(channel.close)
        stub = scripts_pb2_grpc.ScriptServiceStub(channel)

        async def via_grpc(i: int) -> None:
            await stub.UploadScript(
                scripts_pb2.UploadScriptRequest(project=f"ab-{side.name}", script=SCRIPT)
            )

        return via_grpc
    rest = RestClients.open("aiohttp", f"http://127.0.0.1:{side.http_port}", clients)
    stack.push_async_callback(rest.close)
    if path == "rest":
        return lambda i: rest.upload(f"ab-{side.name}")
    return lambda i: rest.upload(f"ab-{side.name}-{i % clients}")


async def measure(
    sides: list[Side], path: str, rounds: int, uploads: int, clients: int
) -> dict[str, list[dict[str, float]]]:
    """Per side, per round: CPU ms per upload by process, and "rate" (uploads/s)."""
    results: dict[str, list[dict[str, float]]] = {side.name: [] for side in sides}
    async with contextlib.AsyncExitStack() as stack:
        upload = {side.name: uploader(path, side, clients, stack) for side in sides}
        for side in sides:  # connections, first documents
            await drive(4 * clients, clients, upload[side.name])
        for n in range(rounds):
            for side in sides if n % 2 == 0 else sides[::-1]:
                before = cpu_by_process(side.pids)
                _, wall = await drive(uploads, clients, upload[side.name])
                figures = {
                    k: 1000 * (s - before[k]) / uploads
                    for k, s in cpu_by_process(side.pids).items()
                }
                figures["rate"] = uploads / wall
                results[side.name].append(figures)
                print(f"round {n + 1} {side.name:<5} {line(figures)}", flush=True)
    return results


def line(figures: dict[str, float]) -> str:
    cpu = "  ".join(f"{k} {figures[k]:5.2f}" for k in PROCESSES)
    return f"{figures['rate']:7.1f} uploads/s   CPU ms per upload: {cpu}"


def main(base: str, path: str, rounds: int, uploads: int, clients: int) -> None:
    with contextlib.ExitStack() as stack:
        moto = stack.enter_context(moto_process())
        nats = stack.enter_context(NatsServer())
        backend_env = {**moto.env, "NATS_URL": nats.url}
        base_tree = stack.enter_context(worktree(base))
        sides = [
            start_side(stack, "base", base_tree, backend_env, moto.pid),
            start_side(stack, "work", ROOT, backend_env, moto.pid),
        ]
        print(
            f"{path}: {rounds} rounds of {uploads} uploads per side, {clients} clients; "
            f"base = {base}, work = the working tree",
            flush=True,
        )
        started = time.perf_counter()
        results = asyncio.run(measure(sides, path, rounds, uploads, clients))
    print(f"\nmedians over the rounds ({time.perf_counter() - started:.0f} s):")
    medians = {
        name: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        for name, rows in results.items()
    }
    for name, figures in medians.items():
        print(f"{name:<5} {line(figures)}")
    # the machine's load drifts between rounds: compare the two sides within each round
    pairs = [
        w["scripts"] / b["scripts"] for w, b in zip(results["work"], results["base"], strict=True)
    ]
    print(
        "script service CPU per upload, work against base, within each round: "
        + ", ".join(f"{p - 1:+.1%}" for p in pairs)
        + f"; median {statistics.median(pairs) - 1:+.1%}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD", help="the commit to compare with (HEAD)")
    parser.add_argument("--path", choices=("grpc", "rest", "rest-projects"), default="grpc")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--uploads", type=int, default=400, help="per side and round")
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    main(args.base, args.path, args.rounds, args.uploads, args.clients)
