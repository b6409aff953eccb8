"""Unit tests of the app's own logic (services/gateway/web/app/logic.js), run in Chromium: the
status sequence, where a version came from, the last line of an error, the line diff, sizes,
the sign-in link's token."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page
from webapp_stack import LiveStack

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def logic(page: Page, live: LiveStack) -> Any:
    page.goto(f"{live.url}/healthz")

    def call(expression: str) -> Any:
        module = "const L = await import('/static/app/logic.js');"
        return page.evaluate(f"async () => {{ {module} return {expression}; }}")

    return call


def labels(result: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(s["label"], s["state"]) for s in result]


def test_an_upload_goes_through_the_sequence_to_model_ready(logic: Any) -> None:
    uploading = logic("L.steps({kind: 'upload', uploading: true, version: 0})")
    assert labels(uploading) == [
        ("Uploading…", "active"),
        ("FreeCAD processing…", "pending"),
        ("Model ready", "pending"),
    ]
    processing = logic(
        "L.steps({kind: 'upload', uploading: false, version: 2, status: {state: 'processing'}})"
    )
    assert labels(processing)[1] == ("FreeCAD processing…", "active")
    queued = logic(
        "L.steps({kind: 'upload', uploading: false, version: 2, status: {state: 'queued'}})"
    )
    assert labels(queued) == [
        ("Uploaded", "done"),
        ("Waiting for a worker…", "active"),
        ("Model ready", "pending"),
    ]
    ready = logic(
        "L.steps({kind: 'upload', uploading: false, version: 2, status: {state: 'completed'}})"
    )
    assert labels(ready) == [
        ("Uploaded", "done"),
        ("Ran in FreeCAD", "done"),
        ("Model ready", "done"),
    ]


def test_finished_steps_say_they_are_done_and_only_the_current_one_has_an_ellipsis(
    logic: Any,
) -> None:
    # a completed upload's labels: in the test above
    processing = logic(
        "L.steps({kind: 'upload', uploading: false, version: 2, status: {state: 'processing'}})"
    )
    assert labels(processing)[:2] == [("Uploaded", "done"), ("FreeCAD processing…", "active")]
    refused = logic("L.steps({kind: 'upload', uploading: false, version: 0, failure: 'bad'})")
    assert labels(refused) == [("Upload failed", "error")]
    # a prompt that made no script: its one step is the failure, not "Script generated"
    not_made = logic(
        "L.steps({kind: 'generate', uploading: false, version: 0, failure: 'no template',"
        " generation: {state: 'failed', round: 1, max_rounds: 3, message: 'no template'}})"
    )
    assert labels(not_made) == [("Generation failed", "error")]
    # every finished step, along every sequence, reads as finished; every step under way has "…"
    sequences = logic(
        "[{kind: 'upload', uploading: false, version: 3, status: {state: 'error', error: 'E'}},"
        " {kind: 'upload', uploading: false, version: 3, status: {state: 'timeout'}},"
        " {kind: 'upload', uploading: false, version: 3, status: {state: 'queued'}},"
        " {kind: 'generate', uploading: false, version: 5, status: {state: 'processing'},"
        "  generation: {state: 'repairing', round: 3, max_rounds: 3}},"
        " {kind: 'generate', uploading: false, version: 5, status: {state: 'completed'},"
        "  generation: {state: 'verifying', round: 2, max_rounds: 3}},"
        " {kind: 'generate', uploading: false, version: 6, status: {state: 'completed'},"
        "  generation: {state: 'succeeded', round: 2, max_rounds: 3}},"
        "].map(L.steps)"
    )
    for sequence in sequences:
        for label, state in labels(sequence):
            if state in ("done", "error"):
                assert "…" not in label, sequence
            if state == "active":
                assert label.endswith("…"), sequence
    assert labels(sequences[3])[:3] == [
        ("Script generated", "done"),
        ("Repaired, round 1 of 2", "done"),
        ("Repairing, round 2 of 2…", "active"),
    ]


def test_an_error_ends_the_sequence_with_the_tracebacks_last_line(logic: Any) -> None:
    result = logic(
        "L.steps({kind: 'upload', version: 3, status: {state: 'error', error: "
        "'Traceback (most recent call last):\\n  File x\\nValueError: too thin\\n'}})"
    )
    assert result[-1] == {"label": "Error", "state": "error", "detail": "ValueError: too thin"}
    timeout = logic("L.steps({kind: 'upload', version: 3, status: {state: 'timeout'}})")
    assert labels(timeout)[-1] == ("Timed out", "error")
    refused = logic("L.steps({kind: 'upload', uploading: false, version: 0, failure: 'bad'})")
    assert refused == [{"label": "Upload failed", "state": "error", "detail": "bad"}]


def test_a_generation_shows_its_repair_rounds(logic: Any) -> None:
    result = logic(
        "L.steps({kind: 'generate', uploading: false, version: 5, status: {state: 'processing'},"
        " generation: {state: 'repairing', round: 2, max_rounds: 3, message: 'box too small'}})"
    )
    assert labels(result)[:2] == [
        ("Script generated", "done"),
        ("Repairing, round 1 of 2…", "active"),
    ]
    assert result[1]["detail"] == "box too small"
    failed = logic(
        "L.steps({kind: 'generate', version: 6, status: {state: 'completed'},"
        " generation: {state: 'failed', round: 3, max_rounds: 3, message: 'volume 10% off'}})"
    )
    assert failed[-1] == {
        "label": "Generation failed",
        "state": "error",
        "detail": "volume 10% off",
    }
    assert "Model ready" not in [s["label"] for s in failed]


def test_provenance_of_versions(logic: Any) -> None:
    cases = logic(
        "[L.provenance({}), L.provenance({source: 'upload'}),"
        " L.provenance({source: 'edited', parent_version: '4'}),"
        " L.provenance({generation_id: 'g', round: '1'}),"
        " L.provenance({generation_id: 'g', round: '3', parent_version: '7'}),"
        " L.provenance({'generation-id': 'g', 'generation-round': '1', 'parent-version': '0'}),"
        " L.provenance({'generation-id': 'g', 'generation-round': '2'}),"
        " L.provenance({'generation-id': 'g', 'generation-round': '1', 'parent-version': '5'})]"
    )
    assert cases == [
        "upload",
        "upload",
        "edited from v4",
        "generated",
        "repaired (round 3)",
        "generated",
        "repaired (round 2)",
        "generated from v5",
    ]


def test_formats_sizes_and_the_sign_in_token(logic: Any) -> None:
    assert logic("L.modelFormats({formats: ['fcstd', 'json', 'stl', 'step']})") == [
        "stl",
        "step",
        "fcstd",
    ]
    assert logic("L.previewFormat(['step', 'obj'])") == "obj"
    assert logic("L.previewFormat(['step'])") is None
    assert logic("[L.formatBytes(12), L.formatBytes(2048), L.formatBytes(5 * 1024 * 1024)]") == [
        "12 B",
        "2.0 KB",
        "5.0 MB",
    ]
    assert logic("L.tokenFromHash('#token=cpt_abc')") == "cpt_abc"
    assert logic("L.tokenFromHash('')") is None
    assert logic("L.formatTime('1970-01-01T00:00:00Z')") == ""


def test_the_line_diff(logic: Any) -> None:
    diff = logic("L.diffLines('a\\nb\\nc', 'a\\nc\\nd')")
    assert [(d["op"], d["text"]) for d in diff] == [(" ", "a"), ("-", "b"), (" ", "c"), ("+", "d")]


def test_a_generation_asked_for_reads_as_the_progress_the_stream_carries(logic: Any) -> None:
    repairing = logic(
        "L.progressOf({id: 'g1', state: 'repairing', round: 2, max_rounds: 3, rounds: ["
        "{round: 1, version: 4, feedback: 'ValueError: too thin'}, {round: 2}]})"
    )
    assert repairing == {
        "id": "g1",
        "state": "repairing",
        "round": 2,
        "max_rounds": 3,
        "version": 0,
        "message": "",
    }
    working = logic(
        "L.progressOf({id: 'g1', state: 'verifying', round: 1, max_rounds: 3, rounds: ["
        "{round: 1, version: 4, feedback: 'volume 10 mm³, expected 12 mm³'}]})"
    )
    assert (working["version"], working["message"]) == (4, "volume 10 mm³, expected 12 mm³")
    done = logic(
        "L.progressOf({id: 'g1', state: 'succeeded', round: 2, result_version: 5, rounds: ["
        "{round: 1, version: 4}, {round: 2, version: 5}]})"
    )
    assert (done["state"], done["version"]) == ("succeeded", 5)
    failed = logic(
        "L.progressOf({id: 'g1', state: 'failed', error: 'the templates make: box, plate',"
        " rounds: []})"
    )
    assert (failed["version"], failed["message"]) == (0, "the templates make: box, plate")
