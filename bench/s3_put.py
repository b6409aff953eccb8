"""CPU and time of one small conditional put, the request every upload makes: boto3's
client.put_object beside cadpipe's puts (cadpipe.adapters.s3_put, through obstore), to the
same moto server, alternating rounds in one run: one put at a time, and 16 in flight from an
event loop (boto3 in threads, as async code had to call it, against AsyncBucket's puts).

    .venv/bin/python -m bench.s3_put [--puts N] [--rounds R]

moto runs in its own process, so this process's CPU time is the client side's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from bench.common import moto_process
from bench.upload_throughput import SCRIPT
from cadpipe.adapters import s3

BOTO3 = "boto3 client.put_object(IfNoneMatch='*')"
CADPIPE = "cadpipe Bucket.put_if_absent"
BOTO3_IN_FLIGHT = "16 in flight: boto3, each in a thread"
CADPIPE_IN_FLIGHT = "16 in flight: AsyncBucket.put_if_absent"
METADATA = {"sha256": "0" * 64, "uploaded-at": "2026-12-07T13:00:00.000+00:00", "upload-id": "u"}


def measure(put: Callable[[str], None], puts: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per put, each put to a new key."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(puts):
        put(f"bench/{uuid.uuid4().hex}.py")
    return (
        1000 * (time.process_time() - cpu) / puts,
        1000 * (time.perf_counter() - wall) / puts,
    )


def measure_in_flight(
    put: Callable[[str], Awaitable[object]], puts: int, in_flight: int = 16
) -> tuple[float, float]:
    """(CPU ms, wall ms) per put, `in_flight` at a time from one event loop."""

    async def run() -> None:
        keys = iter(range(puts))

        async def one_after_another() -> None:
            for _ in keys:
                await put(f"bench/{uuid.uuid4().hex}.py")

        await asyncio.gather(*(one_after_another() for _ in range(in_flight)))

    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(run())
    return (
        1000 * (time.process_time() - cpu) / puts,
        1000 * (time.perf_counter() - wall) / puts,
    )


def main(puts: int, rounds: int) -> None:
    body = SCRIPT.encode()
    with moto_process() as moto:
        bucket = moto.bucket
        name = bucket.name

        def client_put(key: str) -> None:
            bucket.client.put_object(
                Bucket=name,
                Key=key,
                Body=body,
                ContentType="text/x-python",
                Metadata=METADATA,
                IfNoneMatch="*",
            )

        def cadpipe_put(key: str) -> None:
            bucket.put_if_absent(key, body, content_type="text/x-python", metadata=METADATA)

        async_bucket = s3.AsyncBucket(bucket, threads=16)

        async def client_put_in_thread(key: str) -> None:
            await async_bucket.run(lambda: client_put(key))

        async def cadpipe_put_on_loop(key: str) -> None:
            await async_bucket.put_if_absent(
                key, body, content_type="text/x-python", metadata=METADATA
            )

        paths: dict[str, Callable[[int], tuple[float, float]]] = {
            BOTO3: lambda n: measure(client_put, n),
            CADPIPE: lambda n: measure(cadpipe_put, n),
            BOTO3_IN_FLIGHT: lambda n: measure_in_flight(client_put_in_thread, n),
            CADPIPE_IN_FLIGHT: lambda n: measure_in_flight(cadpipe_put_on_loop, n),
        }
        figures: dict[str, list[tuple[float, float]]] = {label: [] for label in paths}
        for run in paths.values():  # connections, first requests
            run(20)
        for _ in range(rounds):
            for label, run in paths.items():
                figures[label].append(run(puts))
        async_bucket.close()

    print(f"\none conditional put of {len(body)} bytes to moto, {rounds} rounds of {puts}")
    print(f"{'':<45}{'CPU ms/put':>12}{'wall ms/put':>13}   (median of rounds)")
    cpu = {label: statistics.median(row[0] for row in rows) for label, rows in figures.items()}
    for label, rows in figures.items():
        wall = statistics.median(row[1] for row in rows)
        print(f"{label:<45}{cpu[label]:12.3f}{wall:13.3f}")
    print(
        f"CPU ratio cadpipe / boto3: {cpu[CADPIPE] / cpu[BOTO3]:.2f} one at a time, "
        f"{cpu[CADPIPE_IN_FLIGHT] / cpu[BOTO3_IN_FLIGHT]:.2f} 16 in flight"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--puts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    main(args.puts, args.rounds)
