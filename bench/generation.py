"""Text to CAD over a suite of prompts with the geometry each must have
(bench/generation_prompts.json, the volumes worked out by hand): success on the first round,
success within max rounds, mean rounds, time from request to succeeded (p50/p95), tokens and
cost per success. Everything runs in this process (services/allinone/stack.py) on moto's S3
server, nats-server, mongomock and real FreeCAD, through the REST API.

    .venv/bin/python -m bench.generation [--repeat 1] [--max-rounds 3]

The provider is whatever the generator's settings name: the offline `templates` catalogue by
default; against a real model set, e.g.

    GENERATOR_PROVIDER=openai OPENAI_BASE_URL=https://openrouter.ai/api/v1 \\
    OPENAI_MODEL=openai/gpt-4o-mini OPENAI_API_KEY=... .venv/bin/python -m bench.generation
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import backends, percentile
from services.allinone import stack

PROMPTS = pathlib.Path(__file__).with_name("generation_prompts.json")
FINAL = {"succeeded", "failed"}


@dataclass(frozen=True)
class Outcome:
    prompt: str
    state: str
    rounds: int
    seconds: float
    tokens: int
    cost_usd: float
    error: str


async def generate(
    client: httpx.AsyncClient, project: str, case: dict[str, Any], max_rounds: int
) -> Outcome:
    body = {"prompt": case["prompt"], "expect": case.get("expect", {}), "max_rounds": max_rounds}
    started = time.perf_counter()
    response = await client.post(f"/api/projects/{project}/generate", json=body)
    if response.is_error:
        raise SystemExit(f"{case['prompt']!r} was refused: {response.status_code} {response.text}")
    generation = response.json()
    while generation["state"] not in FINAL:
        await asyncio.sleep(0.05)
        reply = await client.get(f"/api/projects/{project}/generations/{generation['id']}")
        reply.raise_for_status()
        generation = reply.json()
    rounds = generation.get("rounds", [])
    return Outcome(
        prompt=case["prompt"],
        state=generation["state"],
        rounds=len(rounds),
        seconds=time.perf_counter() - started,
        tokens=sum(int(r.get("tokens_in", 0)) + int(r.get("tokens_out", 0)) for r in rounds),
        cost_usd=sum(float(r.get("cost_usd", 0.0)) for r in rounds),
        error=generation.get("error", ""),
    )


async def main(repeat: int, max_rounds: int) -> None:
    cases = json.loads(PROMPTS.read_text())
    with backends() as b:
        where = stack.Backends(
            s3=b.moto.s3_fields(b.bucket.name),
            nats_url=b.nats.url,
            mongodb_uri=f"mongomock://bench-{uuid.uuid4().hex}",
        )
        # the per-token limit on generations guards a provider's bill, not this benchmark
        overrides = stack.Overrides(gateway={"generation_rate_per_minute": 0})
        async with stack.start(where, overrides=overrides) as running:
            headers = {"Authorization": f"Bearer {running.user_token}"}
            async with httpx.AsyncClient(
                base_url=running.api_url, headers=headers, timeout=120
            ) as client:
                outcomes = [
                    await generate(client, f"bench-gen-{n}-{i}", case, max_rounds)
                    for n in range(repeat)
                    for i, case in enumerate(cases)
                ]
    report(outcomes, max_rounds)


def report(outcomes: list[Outcome], max_rounds: int) -> None:
    for o in outcomes:
        line = f"  {o.state:<9} rounds={o.rounds}  {o.seconds * 1000:7.0f} ms  {o.prompt[:60]}"
        print(line + (f"\n            {o.error[:160]}" if o.error else ""))
    succeeded = [o for o in outcomes if o.state == "succeeded"]
    n = len(outcomes)
    print(f"prompts: {n}, max rounds {max_rounds}")
    print(f"success on round 1:       {sum(o.rounds == 1 for o in succeeded) / n:6.1%}")
    print(f"success within {max_rounds} rounds:  {len(succeeded) / n:6.1%}")
    print(f"mean rounds:              {statistics.fmean(o.rounds for o in outcomes):6.2f}")
    if succeeded:
        ms = [o.seconds * 1000 for o in succeeded]
        print(
            f"request -> succeeded:     p50={percentile(ms, 50):7.0f} ms  "
            f"p95={percentile(ms, 95):7.0f} ms"
        )
        tokens = sum(o.tokens for o in outcomes) / len(succeeded)
        cost = sum(o.cost_usd for o in outcomes) / len(succeeded)
        print(f"per success:              tokens={tokens:.0f}  cost=${cost:.4f}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs of the whole suite")
    parser.add_argument("--max-rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.repeat, args.max_rounds))


if __name__ == "__main__":
    cli()
