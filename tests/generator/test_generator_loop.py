"""The generation loop against hand-written fakes: rounds, repairs, refusals, resumption."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest
from generator_fakes import (
    RAISING_SCRIPT,
    Clock,
    FakeEvents,
    FakeOwners,
    FakeRuns,
    FakeScripts,
    FakeStore,
    ScriptedWriter,
    box_runs,
    box_script,
)
from prometheus_client import CollectorRegistry

from cadpipe import errors
from cadpipe.callers import Caller
from services.generator import domain
from services.generator.domain import ExpectedInput, Limits
from services.generator.generating import FREECAD_EITHER, Generator, Observer, Options
from services.generator.metrics import GeneratorMetrics
from services.generator.ports import CannotMake, Expected, ProviderError

ALICE = Caller(name="alice")


@dataclasses.dataclass
class World:
    store: FakeStore
    scripts: FakeScripts
    runs: FakeRuns
    events: FakeEvents
    owners: FakeOwners
    clock: Clock
    writer: ScriptedWriter

    def generator(
        self, runner: str = "r1", observer: Observer | None = None, **options: object
    ) -> Generator:
        return Generator(
            store=self.store,
            writer=self.writer,
            uploader=self.scripts,
            completions=self.runs,
            reports=self.runs,
            events=self.events,
            owners=self.owners,
            options=Options(runner=runner, **options),  # type: ignore[arg-type]
            clock=self.clock,
            observer=observer,
        )


def world(writer: ScriptedWriter) -> World:
    scripts = FakeScripts()
    return World(
        FakeStore(),
        scripts,
        FakeRuns(scripts, box_runs),
        FakeEvents(),
        FakeOwners(),
        Clock(),
        writer,
    )


def request(prompt: str = "a box 10 x 20 x 30", **kw: object) -> domain.NewGeneration:
    given: dict[str, object] = {
        "project": "p1",
        "prompt": prompt,
        "expected": ExpectedInput(),
        "parent_version": 0,
        "max_rounds": 0,
        "idempotency_key": "",
        "limits": Limits(),
    }
    given.update(kw)
    return domain.check_request(**given)  # type: ignore[arg-type]


async def generate(w: World, g: Generator, **kw: object) -> domain.Generation:
    started, _ = await g.start(request(**kw), ALICE)
    await asyncio.wait_for(g.wait_idle(), 5)
    found = await w.store.get("p1", started.id)
    assert found is not None
    return found


@pytest.mark.timeout(10)
async def test_first_round_succeeds_with_provenance() -> None:
    w = world(ScriptedWriter([box_script()]))
    done = await generate(w, w.generator())
    assert done.state == domain.SUCCEEDED and done.result_version == 1 and done.round == 1
    upload = w.scripts.uploads[0]
    assert upload.caller == ALICE
    assert upload.metadata["generation-id"] == done.id
    assert upload.metadata["generator-provider"] == "fake"
    assert upload.metadata["generation-round"] == "1"
    assert upload.metadata["prompt-sha256"] == domain.prompt_hash(done.prompt)
    assert upload.metadata["tokens-in"] == "100"
    assert upload.key == domain.upload_key(done.id, 1)
    assert w.events.states(done.id) == ["queued", "generating", "verifying", "succeeded"]
    # every published state was stored first, in order
    sequences = [g.sequence for g in w.events.published]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)


@pytest.mark.timeout(10)
async def test_error_then_repair_carries_the_traceback() -> None:
    w = world(ScriptedWriter([RAISING_SCRIPT, box_script()]))
    done = await generate(w, w.generator())
    assert done.state == domain.SUCCEEDED and done.result_version == 2
    assert [r.state for r in done.rounds] == [domain.ERROR, domain.VERIFIED]
    repair = w.writer.requests[1]
    assert repair.attempts[0].feedback.splitlines()[0] == (
        "ValueError: the fillet radius is too large"
    )
    assert repair.attempts[0].script == RAISING_SCRIPT
    assert "repairing" in w.events.states(done.id)


@pytest.mark.timeout(10)
async def test_mismatch_feedback_names_measured_and_expected() -> None:
    w = world(ScriptedWriter([box_script(12, 20, 30), box_script(10, 20, 30)]))
    done = await generate(w, w.generator(), expected=ExpectedInput(bbox_mm=(10, 20, 30)))
    assert done.state == domain.SUCCEEDED and done.result_version == 2
    attempt = w.writer.requests[1].attempts[0]
    assert "measured 12.00 x 20.00 x 30.00 mm, expected 10.00 x 20.00 x 30.00 mm" in (
        attempt.feedback
    )
    assert attempt.measured is not None and attempt.measured.bbox_mm == (12, 20, 30)


@pytest.mark.timeout(10)
async def test_the_model_is_told_the_freecad_the_workers_report() -> None:
    # Debian 12 runs FreeCAD 0.20, Debian 13 1.0: until a report names it, the model is told
    # both; then the version the workers really run.
    w = world(ScriptedWriter([box_script(12, 20, 30), box_script(10, 20, 30)]))
    w.runs.freecad_version = "1.0.0"
    await generate(w, w.generator(), expected=ExpectedInput(bbox_mm=(10, 20, 30)))
    assert [r.freecad_version for r in w.writer.requests] == [FREECAD_EITHER, "1.0.0"]
    w2 = world(ScriptedWriter([box_script()]))
    await generate(w2, w2.generator(freecad_version="0.20.2"))
    assert w2.writer.requests[0].freecad_version == "0.20.2"  # a setting names it


@pytest.mark.timeout(10)
async def test_writer_expectation_is_verified_when_the_request_has_none() -> None:
    w = world(ScriptedWriter([box_script(5, 5, 5)], expected=Expected(bbox_mm=(10, 10, 10))))
    done = await generate(w, w.generator())
    assert done.state == domain.FAILED
    assert "mismatch" in done.rounds[0].state


@pytest.mark.timeout(10)
async def test_no_improvement_stops() -> None:
    w = world(ScriptedWriter([RAISING_SCRIPT]))
    done = await generate(w, w.generator(), max_rounds=5)
    assert done.state == domain.FAILED and done.round == 2
    assert "round 2 did not improve on round 1" in done.error
    assert len(w.scripts.uploads) == 2


@pytest.mark.timeout(10)
async def test_max_rounds() -> None:
    scripts = [box_script(15, 20, 30), box_script(14, 20, 30), box_script(13, 20, 30)]
    w = world(ScriptedWriter(scripts))
    done = await generate(w, w.generator(), expected=ExpectedInput(bbox_mm=(10, 20, 30)))
    assert done.state == domain.FAILED and done.round == 3
    assert done.error.startswith("no round succeeded in 3")


@pytest.mark.timeout(10)
async def test_gui_script_is_rejected_before_upload() -> None:
    w = world(ScriptedWriter(["import FreeCADGui\n", box_script()]))
    done = await generate(w, w.generator())
    assert [r.state for r in done.rounds] == [domain.REJECTED, domain.VERIFIED]
    assert [u.version for u in w.scripts.uploads] == [1]  # no half-made version


@pytest.mark.timeout(10)
async def test_provider_error_and_cannot_make_fail_with_their_message() -> None:
    w = world(ScriptedWriter([], error=ProviderError("HTTP 429 from the provider")))
    done = await generate(w, w.generator())
    assert done.state == domain.FAILED and done.error == "HTTP 429 from the provider"
    assert done.rounds[0].state == domain.PROVIDER_ERROR
    w = world(ScriptedWriter([], error=CannotMake("I can make: box, cylinder")))
    done = await generate(w, w.generator())
    assert done.error == "I can make: box, cylinder"
    assert w.scripts.uploads == []


@pytest.mark.timeout(10)
async def test_idempotency_key_replays() -> None:
    w = world(ScriptedWriter([box_script()]))
    g = w.generator()
    first, replayed = await g.start(request(idempotency_key="k1"), ALICE)
    again, replayed_again = await g.start(request(idempotency_key="k1"), ALICE)
    await g.wait_idle()
    assert not replayed and replayed_again and again.id == first.id
    assert len(w.scripts.uploads) == 1


@pytest.mark.timeout(10)
async def test_other_identity_and_unknown_parent() -> None:
    w = world(ScriptedWriter([box_script()]))
    w.owners.owners["p1"] = "bob"
    g = w.generator()
    with pytest.raises(errors.NotFound):
        await g.start(request(), ALICE)
    w.owners.owners["p1"] = "alice"
    with pytest.raises(errors.InvalidArgument) as raised:
        await g.start(request(parent_version=7), ALICE)
    assert raised.value.field == "parent_version"


@pytest.mark.timeout(10)
async def test_parent_script_is_given_to_the_writer() -> None:
    w = world(ScriptedWriter([box_script(6, 6, 6)]))
    w.owners.owners["p1"] = "alice"
    w.scripts.scripts[("p1", 1)] = box_script(5, 5, 5)
    done = await generate(w, w.generator(), parent_version=1)
    assert done.state == domain.SUCCEEDED and done.result_version == 2
    assert w.writer.requests[0].parent_script == box_script(5, 5, 5)
    assert w.scripts.uploads[0].metadata["parent-version"] == "1"


@pytest.mark.timeout(10)
async def test_stopped_mid_run_resumes_in_another_runner_without_a_second_version() -> None:
    w = world(ScriptedWriter([box_script()]))
    w.runs.gate = asyncio.Event()
    first = w.generator("r1")
    started, _ = await first.start(request(), ALICE)
    await w.runs.waiting.wait()
    await first.stop()  # a restart: the wait is cut; the state says "processing, version 1"
    stored = await w.store.get("p1", started.id)
    assert stored is not None and stored.rounds[-1].state == domain.PROCESSING
    w.runs.gate.set()
    second = w.generator("r2")
    assert await second.resume_lapsed() == 1
    await asyncio.wait_for(second.wait_idle(), 5)
    done = await w.store.get("p1", started.id)
    assert done is not None and done.state == domain.SUCCEEDED and done.result_version == 1
    assert len(w.scripts.uploads) == 1
    assert len(w.writer.requests) == 1


@pytest.mark.timeout(10)
async def test_resume_while_uploading_gets_the_same_version() -> None:
    w = world(ScriptedWriter([box_script()]))
    g = w.generator("r1")
    started, _ = await g.start(request(), ALICE)
    await g.wait_idle()
    done = await w.store.get("p1", started.id)
    assert done is not None
    # replay the upload of round 1 as a resumed runner would: the key gives version 1 again
    again = await w.scripts.upload(
        ALICE, "p1", done.rounds[0].script, {}, domain.upload_key(done.id, 1)
    )
    assert again == 1 and len(w.scripts.uploads) == 1


@pytest.mark.timeout(10)
async def test_deadline_fails_with_the_reason() -> None:
    w = world(ScriptedWriter([box_script()]))
    w.runs.gate = asyncio.Event()  # the run never finishes
    g = w.generator(deadline_seconds=0.2)
    done = await generate(w, g)
    assert done.state == domain.FAILED
    assert "deadline of 0.2 s" in done.error


@pytest.mark.timeout(10)
async def test_a_lapsed_deadline_ends_a_resumed_generation() -> None:
    w = world(ScriptedWriter([box_script()]))
    w.runs.gate = asyncio.Event()
    first = w.generator("r1", deadline_seconds=60)
    started, _ = await first.start(request(), ALICE)
    await w.runs.waiting.wait()
    await first.stop()
    w.clock.now += dt.timedelta(seconds=120)
    second = w.generator("r2", deadline_seconds=60)
    await second.resume_lapsed()
    await asyncio.wait_for(second.wait_idle(), 5)
    done = await w.store.get("p1", started.id)
    assert done is not None and done.state == domain.FAILED and "deadline" in done.error


@pytest.mark.timeout(10)
async def test_refused_upload_is_a_rejected_round() -> None:
    w = world(ScriptedWriter([box_script()]))
    w.scripts.refuse = "script: too large"
    done = await generate(w, w.generator(), max_rounds=1)
    assert done.rounds[0].state == domain.REJECTED
    assert "script service refused" in done.rounds[0].feedback


@pytest.mark.timeout(10)
async def test_summary_counts_rounds_and_providers() -> None:
    w = world(ScriptedWriter([RAISING_SCRIPT, box_script()]))
    g = w.generator()
    await generate(w, g)
    summary = await g.summary(0)
    assert summary.by_state["succeeded"] == 1
    assert summary.success_rate == 1.0 and summary.first_round_success_rate == 0.0
    assert summary.mean_rounds == 2.0
    (fake,) = summary.providers
    assert fake.calls == 2 and fake.tokens_in == 200 and fake.errors == 0


@pytest.mark.timeout(10)
async def test_the_caller_follows_a_generation_before_its_first_version_claims_the_project() -> (
    None
):
    w = world(ScriptedWriter([box_script()], gate=asyncio.Event()))
    g = w.generator()
    started, _ = await g.start(request(), ALICE)  # p1 has no owner yet: nothing uploaded
    assert (await g.get("p1", started.id, ALICE)).id == started.id
    assert [x.id for x in (await g.page("p1", ALICE, page_size=0, page_token=""))[0]] == [
        started.id
    ]
    for call in (
        g.get("p1", started.id, Caller(name="bob")),
        g.page("p1", Caller(name="bob"), page_size=0, page_token=""),
    ):
        with pytest.raises(errors.NotFound) as raised:
            await call
        assert raised.value.message == "project 'p1' not found"
    await g.stop()


@pytest.mark.timeout(10)
async def test_a_dependency_outage_is_waited_out_from_the_stored_state() -> None:
    w = world(ScriptedWriter([box_script()]))
    w.runs.report_outages = 2
    done = await generate(w, w.generator(retry_seconds=0.01))
    assert done.state == domain.SUCCEEDED and done.result_version == 1
    assert len(w.scripts.uploads) == 1 and len(w.writer.requests) == 1


@pytest.mark.timeout(10)
async def test_an_outage_past_the_deadline_fails_with_what_did_not_answer() -> None:
    w = world(ScriptedWriter([box_script()]))
    w.runs.report_outages = 10_000
    done = await generate(w, w.generator(retry_seconds=0.01, deadline_seconds=0.3))
    assert done.state == domain.FAILED
    assert "deadline of 0.3 s (round 1); last: the watcher service did not answer" in done.error


@pytest.mark.timeout(10)
async def test_leases_are_renewed_only_for_generations_running_here() -> None:
    w = world(ScriptedWriter([box_script()], gate=asyncio.Event()))
    g = w.generator("r1", lease_seconds=30)
    await g.start(request(prompt="a"), ALICE)
    orphan, _ = await g.start(request(prompt="b"), ALICE)
    g._running.pop(orphan.id).cancel()  # its task ended without finishing
    w.clock.now += dt.timedelta(seconds=20)
    await g.renew_leases()
    w.clock.now += dt.timedelta(seconds=20)
    assert [
        x.id for x in await w.store.claim_lapsed("r2", now=w.clock.now, until=w.clock.now, limit=9)
    ] == [orphan.id]
    await g.stop()


@pytest.mark.timeout(10)
async def test_an_idempotency_key_reused_for_another_request_is_refused() -> None:
    w = world(ScriptedWriter([box_script()]))
    g = w.generator()
    await g.start(request(idempotency_key="k1"), ALICE)
    with pytest.raises(errors.FailedPrecondition) as raised:
        await g.start(request(prompt="a cylinder", idempotency_key="k1"), ALICE)
    assert "first used with another request" in raised.value.message
    await g.wait_idle()


@pytest.mark.timeout(10)
async def test_prometheus_counts_generations_rounds_calls_tokens_and_cost() -> None:
    registry = CollectorRegistry()
    metrics = GeneratorMetrics(registry)
    w = world(ScriptedWriter([RAISING_SCRIPT, box_script()]))
    await generate(w, w.generator(observer=metrics.observer()))
    value = registry.get_sample_value
    assert value("cadpipe_generator_generations_total", {"state": "succeeded"}) == 1
    assert value("cadpipe_generator_rounds_sum") == 2
    labels = {"provider": "fake", "model": "fake-1"}
    assert value("cadpipe_generator_provider_calls_total", {**labels, "outcome": "ok"}) == 2
    assert value("cadpipe_generator_tokens_total", {**labels, "direction": "in"}) == 200
    assert value("cadpipe_generator_cost_usd_total", labels) == pytest.approx(0.002)
    assert value("cadpipe_generator_provider_latency_seconds_count", labels) == 2


@pytest.mark.timeout(10)
async def test_generations_beyond_the_instances_slots_wait_queued() -> None:
    w = world(ScriptedWriter([box_script()], gate=asyncio.Event()))
    g = w.generator(max_concurrent=1)
    first, _ = await g.start(request(prompt="a"), ALICE)
    second, _ = await g.start(request(prompt="b"), ALICE)
    await w.writer.asked.wait()
    waiting = await w.store.get("p1", second.id)
    assert waiting is not None and waiting.state == domain.QUEUED
    assert len(w.writer.requests) == 1
    assert w.writer.gate is not None
    w.writer.gate.set()
    await asyncio.wait_for(g.wait_idle(), 5)
    for gid in (first.id, second.id):
        done = await w.store.get("p1", gid)
        assert done is not None and done.state == domain.SUCCEEDED
