"""Text to CAD through REST against the real stack (moto, nats-server, mongomock, FreeCAD): a
generation becomes versions that run, are verified and repaired."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fake_openai import FakeOpenAI, Reply
from generator_fakes import RAISING_SCRIPT, PromptWriter, ScriptedWriter, box_script
from generator_stack import Running, finished, generate, start

from cadpipe.adapters import mongo, s3
from cadpipe.devstack import MotoS3, NatsServer, free_port
from cadpipe.settings import MongoSettings, S3Settings
from services.generator import bootstrap

pytestmark = [
    pytest.mark.freecad,
    pytest.mark.timeout(120),
    pytest.mark.asyncio(loop_scope="module"),
]

BOX = {"bbox": {"x_mm": 10, "y_mm": 20, "z_mm": 30}}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(moto_server: MotoS3) -> AsyncIterator[tuple[Running, PromptWriter]]:
    """One stack for the module (starting one takes seconds, a generation well under one):
    each test has projects and prompts of its own."""
    unique = uuid.uuid4().hex[:10]
    s3_settings = S3Settings(**moto_server.s3_fields(f"cadpipe-gen-{unique}"))
    s3.Bucket(s3.make_client(s3_settings), s3_settings.s3_bucket).create_if_missing()
    mongo_settings = MongoSettings(
        mongodb_uri=f"mongomock://generator-{unique}", mongodb_database=f"gen_{unique}"
    )
    writer = PromptWriter()
    with NatsServer() as nats:
        async with start(s3_settings, mongo_settings, nats.url, writer) as running:
            yield running, writer


@pytest.fixture
def servers(
    bucket: object, s3_settings: S3Settings, mongo_settings: MongoSettings, nats_server: NatsServer
) -> tuple[S3Settings, MongoSettings, str]:
    """Servers of the test's own, for a stack the test starts itself."""
    return s3_settings, mongo_settings, nats_server.url


async def test_generate_succeeds_with_a_version_and_its_files(
    shared: tuple[Running, PromptWriter],
) -> None:
    running, writers = shared
    writers.route("gen1: a box", ScriptedWriter([box_script(10, 20, 30)]))
    async with running.client() as client:
        started = await generate(client, "gen1", prompt="gen1: a box", expect=BOX)
        assert started["state"] == "queued" and started["id"]
        done = await finished(client, "gen1", started["id"])
        assert done["state"] == "succeeded", done
        assert done["result_version"] == 1 and done["round"] == 1
        (only,) = done["rounds"]
        assert only["state"] == "verified" and only["version"] == 1
        assert only["measured"]["bbox"] == {"x_mm": 10.0, "y_mm": 20.0, "z_mm": 30.0}
        assert abs(only["measured"]["volume_mm3"] - 6000) < 1
        assert only["provider"] == "fake" and only["tokens_in"] == "100"

        # an ordinary version: its provenance, outputs, a download, the typed report
        script = (await client.get("/api/projects/gen1/script/1")).json()
        assert script["script"]["metadata"]["generation-id"] == done["id"]
        assert script["script"]["metadata"]["generator-model"] == "fake-1"
        outputs = (await client.get("/api/projects/gen1/outputs", params={"version": 1})).json()
        assert {o["format"] for o in outputs["outputs"]} >= {"step", "fcstd"}
        url = (await client.get("/api/projects/gen1/download/step")).json()["url"]
        async with httpx.AsyncClient() as plain:
            assert (await plain.get(url)).content.startswith(b"ISO-10303-21;")
        report = (await client.get("/api/projects/gen1/report", params={"version": 1})).json()
        assert report["solids"] == 1 and report["total"]["valid"]
        assert (report["total"]["x_mm"], report["total"]["z_mm"]) == (10.0, 30.0)

        listed = (await client.get("/api/projects/gen1/generations")).json()
        assert [g["id"] for g in listed["generations"]] == [done["id"]]


async def test_the_template_catalogue_makes_verifies_and_edits_a_part(
    shared: tuple[Running, PromptWriter],
) -> None:
    running, _ = shared  # unrouted prompts reach the real catalogue
    async with running.client() as client:
        prompt = "plate 100 by 60 by 5 mm with four M5 holes"
        done = await finished(client, "tpl1", (await generate(client, "tpl1", prompt=prompt))["id"])
        assert done["state"] == "succeeded" and done["result_version"] == 1, done
        (only,) = done["rounds"]
        assert (only["provider"], only["model"]) == ("templates", "catalogue")
        # verified against the geometry the catalogue says the part has
        assert only["measured"]["bbox"] == {"x_mm": 100.0, "y_mm": 60.0, "z_mm": 5.0}
        assert only["feedback"] == "the geometry is within tolerance"
        edit = await generate(client, "tpl1", prompt="make the holes 8 mm", parent_version=1)
        edited = await finished(client, "tpl1", edit["id"])
        assert edited["state"] == "succeeded" and edited["result_version"] == 2, edited
        before, after = done["rounds"][0]["measured"], edited["rounds"][0]["measured"]
        assert after["volume_mm3"] < before["volume_mm3"]  # wider holes, less material
        cannot = await generate(client, "tpl1", prompt="a teapot with a spout")
        failed = await finished(client, "tpl1", cannot["id"])
        assert failed["state"] == "failed" and "They make:" in failed["error"], failed
        assert "plate" in failed["error"] and failed["rounds"][0]["version"] == 0


async def test_a_script_that_raises_is_repaired_from_its_traceback(
    shared: tuple[Running, PromptWriter],
) -> None:
    running, writers = shared
    writer = writers.route("gen2: a box", ScriptedWriter([RAISING_SCRIPT, box_script()]))
    async with running.client() as client:
        started = await generate(client, "gen2", prompt="gen2: a box")
        done = await finished(client, "gen2", started["id"])
        assert done["state"] == "succeeded" and done["result_version"] == 2, done
        assert [r["state"] for r in done["rounds"]] == ["error", "verified"]
        feedback = writer.requests[1].attempts[0].feedback
        assert feedback.splitlines()[0] == "ValueError: the fillet radius is too large"
        scripts = (await client.get("/api/projects/gen2/scripts")).json()["scripts"]
        assert sorted(s["version"] for s in scripts) == [1, 2]


async def test_a_geometry_mismatch_is_repaired_with_measured_vs_expected(
    shared: tuple[Running, PromptWriter],
) -> None:
    running, writers = shared
    scripts = [box_script(12, 20, 30), box_script(10, 20, 30)]
    writer = writers.route("gen3: a box", ScriptedWriter(scripts))
    async with running.client() as client:
        started = await generate(client, "gen3", prompt="gen3: a box", expect=BOX)
        done = await finished(client, "gen3", started["id"])
        assert done["state"] == "succeeded" and done["result_version"] == 2, done
        assert done["rounds"][0]["state"] == "mismatch"
        feedback = writer.requests[1].attempts[0].feedback
        assert "measured 12.00 x 20.00 x 30.00 mm, expected 10.00 x 20.00 x 30.00 mm" in feedback
        assert done["rounds"][0]["feedback"] == feedback


async def test_two_generations_at_once_on_one_project(
    shared: tuple[Running, PromptWriter],
) -> None:
    running, writers = shared
    writers.route("gen4: a box", ScriptedWriter([box_script()]))
    async with running.client() as client:
        first, second = await asyncio.gather(
            generate(client, "gen4", prompt="gen4: a box"),
            generate(client, "gen4", prompt="gen4: a box"),
        )
        done = await asyncio.gather(
            finished(client, "gen4", first["id"]), finished(client, "gen4", second["id"])
        )
        assert [d["state"] for d in done] == ["succeeded", "succeeded"], done
        assert sorted(d["result_version"] for d in done) == [1, 2]


async def test_bad_input_is_400_with_a_message(
    shared: tuple[Running, PromptWriter],
) -> None:
    running, writers = shared
    writers.route("gen5: b", ScriptedWriter([box_script()]))
    async with running.client() as client:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"prompt": ""}, "prompt: must not be empty"),
            ({"prompt": "x" * 4001}, "prompt: 4001 characters; at most 4000"),
            ({"prompt": "a box", "expect": {"volume_mm3": -5}}, "expect.volume_mm3"),
            ({"prompt": "a box", "expect": {"bbox": {"x_mm": 1}}}, "expect.bbox"),
            ({"prompt": "a box", "max_rounds": 9}, "max_rounds: 1 to 5"),
            ({"prompt": "a box", "parent_version": 3}, "parent_version"),
        ]
        for body, message in cases:
            response = await client.post("/api/projects/gen5/generate", json=body)
            assert response.status_code == 400, (body, response.text)
            assert message in response.json()["message"], response.json()
        # a project with one version: version 3 is still unknown
        first = await finished(
            client, "gen5", (await generate(client, "gen5", prompt="gen5: b"))["id"]
        )
        assert first["state"] == "succeeded"
        response = await client.post(
            "/api/projects/gen5/generate", json={"prompt": "taller", "parent_version": 3}
        )
        assert response.status_code == 400
        assert "gen5 has no version 3" in response.json()["message"]


async def test_another_identity_gets_404_and_admin_metrics(
    shared: tuple[Running, PromptWriter],
) -> None:
    running, writers = shared
    writers.route("gen6: a", ScriptedWriter([box_script()]))
    async with running.client() as client:
        started = await generate(client, "gen6", prompt="gen6: a")
        done = await finished(client, "gen6", started["id"])
        assert done["state"] == "succeeded"
        async with running.client(running.token_for("mallory")) as mallory:
            for path in (f"generations/{done['id']}", "generations"):
                response = await mallory.get(f"/api/projects/gen6/{path}")
                assert response.status_code == 404, response.text
            response = await mallory.post("/api/projects/gen6/generate", json={"prompt": "x"})
            assert response.status_code == 404
            assert (await mallory.get("/api/monitoring/ai/metrics")).status_code == 403
        async with running.client(running.stack.admin_token) as admin:
            metrics = (await admin.get("/api/monitoring/ai/metrics")).json()
            assert int(metrics["generations"]["succeeded"]) >= 1
            assert 0 < metrics["success_rate"] <= 1 and metrics["mean_rounds"] >= 1
            # the stack is shared: every test's generations count
            by_provider = {(p["provider"], p["model"]): p for p in metrics["providers"]}
            fake = by_provider["fake", "fake-1"]
            assert int(fake["calls"]) >= 1 and float(fake["latency_p95_seconds"]) > 0
            assert int(fake["tokens_in"]) >= 100 and fake["cost_usd"] > 0


async def sse(
    client: httpx.AsyncClient, project: str, seen: list[dict[str, Any]], opened: asyncio.Event
) -> None:
    async with client.stream("GET", f"/api/projects/{project}/events") as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                status = json.loads(line.removeprefix("data:"))
                seen.append(status)
                opened.set()
                if (status.get("generation") or {}).get("state") in ("succeeded", "failed"):
                    return


async def test_the_event_stream_shows_the_sequence(
    shared: tuple[Running, PromptWriter],
) -> None:
    running, writers = shared
    writers.route("gen7: first", ScriptedWriter([box_script()]))
    writers.route("gen7: a box", ScriptedWriter([RAISING_SCRIPT, box_script()]))
    async with running.client() as client:
        # a project is watched once it exists (until then it is nobody's: 404)
        started = await generate(client, "gen7", prompt="gen7: first")
        first = await finished(client, "gen7", started["id"])
        assert first["state"] == "succeeded"
        seen: list[dict[str, Any]] = []
        opened = asyncio.Event()
        watching = asyncio.create_task(sse(client, "gen7", seen, opened))
        await asyncio.wait_for(opened.wait(), 10)  # the first message: the current status
        await generate(client, "gen7", prompt="gen7: a box")
        await asyncio.wait_for(watching, 60)
        steps = []
        for status in seen[1:]:
            g = status.get("generation")
            step = (
                f"generation {g['state']} r{g['round']} v{g['version']}"
                if g
                else f"version {status['version']} {status['state']}"
            )
            if not steps or steps[-1] != step:
                steps.append(step)
        # the version's own statuses come from the script service and the watcher, so they
        # may pass the generator's news of the same upload; each source keeps its order
        expected_in_order = [
            "generation queued r0 v0",
            "generation generating r1 v0",
            "version 2 error",
            "generation repairing r2 v0",
            "version 3 completed",
            "generation succeeded r2 v3",
        ]
        position = 0
        for step in steps:
            if position < len(expected_in_order) and step == expected_in_order[position]:
                position += 1
        assert position == len(expected_in_order), steps
        for step in ("generation generating r1 v2", "version 2 processing", "version 3 processing"):
            assert step in steps, steps
        failed_round = next(
            s["generation"]
            for s in seen
            if s.get("generation", {}).get("version") == 2
            and "ValueError" in s["generation"]["message"]
        )
        assert failed_round["message"] == "ValueError: the fillet radius is too large"


async def test_restart_of_the_generator_mid_generation_resumes(
    servers: tuple[S3Settings, MongoSettings, str],
) -> None:
    _, mongo_settings, _ = servers
    port = free_port()
    stuck = ScriptedWriter([box_script()], gate=asyncio.Event())  # never answers
    async with (
        start(*servers, None, with_generator=False, generator_port=port) as running,
        running.client() as client,
    ):
        settings = running.generator_settings(
            port, completion_poll_seconds=0.5, resume_interval_seconds=0.2
        )
        async with bootstrap.start(settings, writer=stuck):
            started = await generate(client, "gen8", prompt="a box")
            await asyncio.wait_for(stuck.asked.wait(), 10)
        # stopped mid-round: what is stored says so, and nothing was uploaded
        db_client, db = mongo.connect(mongo_settings)
        try:
            mid = db["generations"].find_one({"_id": started["id"]})
        finally:
            db_client.close()
        assert mid["state"] == "generating" and mid["rounds"][0]["state"] == "writing"
        writer = ScriptedWriter([box_script()])
        async with bootstrap.start(settings, writer=writer):
            done = await finished(client, "gen8", started["id"])
        assert done["state"] == "succeeded" and done["result_version"] == 1, done
        assert len(writer.requests) == 1


async def test_an_openai_protocol_provider_writes_and_repairs(
    servers: tuple[S3Settings, MongoSettings, str],
) -> None:
    """GENERATOR_PROVIDER=openai against a server speaking the protocol: the repair request
    carries the real traceback; tokens and cost land in the rounds and the version's metadata."""
    port = free_port()
    replies = [
        Reply.answer(f"```python\n{RAISING_SCRIPT}```", cost=0.002),
        Reply.answer(f"```python\n{box_script()}```", cost=0.003),
    ]
    with FakeOpenAI(replies) as api:
        async with (
            start(*servers, None, with_generator=False, generator_port=port) as running,
            running.client() as client,
        ):
            settings = running.generator_settings(
                port,
                generator_provider="openai",
                openai_base_url=api.base_url,
                openai_model="fake-model",
                openai_api_key="sk-test",
            )
            async with bootstrap.start(settings):
                started = await generate(client, "gen9", prompt="a box 10 x 20 x 30 mm")
                done = await finished(client, "gen9", started["id"])
            assert done["state"] == "succeeded" and done["result_version"] == 2, done
            assert [(r["provider"], r["model"]) for r in done["rounds"]] == [
                ("openai", "fake-model")
            ] * 2
            assert done["rounds"][1]["cost_usd"] == 0.003
            assert done["rounds"][1]["tokens_out"] == "22"
            repair = json.dumps(api.requests[1].json["messages"])
            assert "ValueError: the fillet radius is too large" in repair
            # the FreeCAD version: both, until a worker's report names the one it runs
            assert "0.20 or 1.0" in json.dumps(api.requests[0].json["messages"])
            script = (await client.get("/api/projects/gen9/script/2")).json()["script"]
            assert script["metadata"]["cost-usd"] == "0.003000"
            assert script["metadata"]["generator-provider"] == "openai"
