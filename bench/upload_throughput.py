"""Upload throughput: 16 concurrent clients on one project, through REST and through gRPC,
beside raw boto3 put_object to the same moto server, all in one run.

    make bench   (or: .venv/bin/python -m bench.upload_throughput [--uploads N] [--clients C])

Prints uploads/s, p50 and p99 latency, and each path's throughput as a ratio of the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import grpc
import httpx

from bench.common import backends, summary
from cadpipe.v1 import scripts_pb2, scripts_pb2_grpc
from services.gateway import bootstrap as gateway
from services.gateway.settings import Settings as GatewaySettings
from services.scripts import bootstrap as scripts
from services.scripts.settings import Settings as ScriptsSettings

SCRIPT = "import FreeCAD\nimport Part\nshape = Part.makeBox(20, 20, 10)\n" + "# padding\n" * 100


async def drive(total: int, clients: int, upload: Callable[[int], Awaitable[None]]) -> tuple[list[float], float]:
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


async def main(total: int, clients: int) -> None:
    with backends() as b:
        bucket = b.bucket
        s3_fields = {
            "s3_bucket": bucket.name,
            "s3_endpoint_url": b.moto.endpoint_url,
            "aws_access_key_id": b.moto.access_key,
            "aws_secret_access_key": b.moto.secret_key,
        }
        settings = ScriptsSettings(
            **s3_fields, mongodb_uri=f"mongomock://bench-{uuid.uuid4().hex}", nats_url=b.nats.url,
            grpc_host="127.0.0.1", grpc_port=0,
        )
        async with scripts.start(settings) as svc:
            gw_settings = GatewaySettings(http_host="127.0.0.1", http_port=0, scripts_addr=f"127.0.0.1:{svc.port}",
                                          auth_mode="none")  # the transcoding cost alone
            async with gateway.start(gw_settings) as gw:
                body = SCRIPT.encode()

                async def raw(i: int) -> None:
                    key = f"baseline/raw/raw_v{i + 1}.py"
                    await asyncio.to_thread(
                        bucket.client.put_object, Bucket=bucket.name, Key=key, Body=body, ContentType="text/x-python"
                    )

                channel = grpc.aio.insecure_channel(f"127.0.0.1:{svc.port}")
                stub = scripts_pb2_grpc.ScriptServiceStub(channel)

                async def via_grpc(i: int) -> None:
                    await stub.UploadScript(scripts_pb2.UploadScriptRequest(project="bench-grpc", script=SCRIPT))

                http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}", timeout=60,
                                         limits=httpx.Limits(max_connections=clients))

                async def via_rest(i: int) -> None:
                    r = await http.post("/api/projects/bench-rest/upload-script", json={"script": SCRIPT})
                    r.raise_for_status()

                for warm in (raw, via_grpc, via_rest):  # connections, caches, first index documents
                    await drive(clients, clients, warm)
                results = {}
                for name, fn in (("boto3 put_object (baseline)", raw), ("gRPC UploadScript", via_grpc),
                                 ("REST upload-script", via_rest)):
                    results[name] = await drive(total, clients, fn)
                await http.aclose()
                await channel.close()

    print(f"\nupload throughput: {total} uploads per path, {clients} concurrent clients, one project, moto over HTTP")
    base_rate = total / results["boto3 put_object (baseline)"][1]
    for name, (latencies, wall) in results.items():
        rate = total / wall
        print(summary(name, latencies, wall) + f"  ratio to baseline {rate / base_rate:5.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=400)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.uploads, args.clients))
