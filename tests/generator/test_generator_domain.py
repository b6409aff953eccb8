"""The generator's rules: request checks, script checks, verification, improvement."""

from __future__ import annotations

import math

import pytest

from cadpipe import errors
from services.generator import domain
from services.generator.domain import ExpectedInput, Limits, Round
from services.generator.ports import Expected, Measured


def check(**overrides: object) -> domain.NewGeneration:
    given: dict[str, object] = {
        "project": "p1",
        "prompt": "a box",
        "expected": ExpectedInput(),
        "parent_version": 0,
        "max_rounds": 0,
        "idempotency_key": "",
        "limits": Limits(),
    }
    given.update(overrides)
    return domain.check_request(**given)  # type: ignore[arg-type]


def test_request_defaults() -> None:
    new = check()
    assert new.max_rounds == 3 and new.expected is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"prompt": "  "}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"project": "../etc"}, "project"),
        ({"max_rounds": 6}, "max_rounds"),
        ({"max_rounds": -1}, "max_rounds"),
        ({"parent_version": -2}, "parent_version"),
        ({"expected": ExpectedInput(bbox_mm=(10, 0, 5))}, "expect.bbox"),
        ({"expected": ExpectedInput(volume_mm3=-1)}, "expect.volume_mm3"),
        ({"expected": ExpectedInput(volume_mm3=math.nan)}, "expect.volume_mm3"),
        (
            {"expected": ExpectedInput(volume_mm3=10, volume_tolerance=1.5)},
            "expect.volume_tolerance",
        ),
        ({"expected": ExpectedInput(bbox_tolerance_mm=1)}, "expect.bbox_tolerance_mm"),
        ({"expected": ExpectedInput(solids=-1)}, "expect.solids"),
        ({"idempotency_key": "has space"}, "idempotency_key"),
    ],
)
def test_bad_requests_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(errors.InvalidArgument) as raised:
        check(**overrides)
    assert raised.value.field == field
    assert raised.value.message.startswith(field.split(".")[0])


def test_expectation_with_defaults() -> None:
    new = check(expected=ExpectedInput(bbox_mm=(10, 20, 30), volume_mm3=6000))
    assert new.expected == Expected(bbox_mm=(10, 20, 30), volume_mm3=6000)


@pytest.mark.parametrize(
    ("script", "needle"),
    [
        ("", "empty"),
        ("def f(:\n  pass\n", "SyntaxError at line 1"),
        ("import FreeCAD\nimport FreeCADGui\n", "line 2: imports FreeCADGui"),
        ("from PySide2 import QtCore\n", "PySide2"),
        ("import PyQt5.QtWidgets as w\n", "PyQt5"),
        ("from Qt import x\n", "Qt"),
    ],
)
def test_scripts_refused_before_upload(script: str, needle: str) -> None:
    refusal = domain.check_script(script, max_bytes=1000)
    assert refusal is not None and needle in refusal


def test_good_script_passes() -> None:
    assert domain.check_script("import FreeCAD\nimport Part\nx = 1\n", max_bytes=1000) is None
    assert domain.check_script("x" * 2000, max_bytes=1000) is not None


def measured(x: float = 10, y: float = 20, z: float = 30, **kw: object) -> Measured:
    fields: dict[str, object] = {
        "bbox_mm": (x, y, z),
        "volume_mm3": x * y * z,
        "area_mm2": 1.0,
        "solids": 1,
        "valid": True,
    }
    fields.update(kw)
    return Measured(**fields)  # type: ignore[arg-type]


def test_verify() -> None:
    assert not domain.verify(None, None).ok
    assert not domain.verify(measured(solids=0), None).ok
    assert not domain.verify(measured(valid=False), None).ok
    assert domain.verify(measured(), None).ok
    fits = Expected(bbox_mm=(10.3, 20, 30), volume_mm3=6000, solids=1)
    assert domain.verify(measured(), fits).ok
    wrong = domain.verify(measured(12, 20, 30), Expected(bbox_mm=(10, 20, 30), volume_mm3=6000))
    assert not wrong.ok
    assert "measured 12.00 x 20.00 x 30.00 mm, expected 10.00 x 20.00 x 30.00 mm" in wrong.feedback
    assert "volume measured 7200.0 mm³, expected 6000.0 mm³" in wrong.feedback
    closer = domain.verify(measured(11, 20, 30), Expected(bbox_mm=(10, 20, 30), volume_mm3=6000))
    assert closer.distance < wrong.distance


def test_improvement_rule() -> None:
    error = Round(round=1, state=domain.ERROR, feedback="ValueError: a\n...")
    same = Round(round=2, state=domain.ERROR, feedback="ValueError: a\nother tail")
    other = Round(round=2, state=domain.ERROR, feedback="NameError: b")
    mismatch = Round(round=2, state=domain.MISMATCH, feedback="geometry mismatch")
    assert not domain.improves(same, (error,), distance=math.inf, best=math.inf)
    assert domain.improves(other, (error,), distance=math.inf, best=math.inf)
    assert domain.improves(mismatch, (error,), distance=1.0, best=math.inf)
    assert not domain.improves(error, (mismatch,), distance=math.inf, best=1.0)
    assert domain.improves(mismatch, (mismatch,), distance=0.5, best=1.0)
    assert not domain.improves(mismatch, (mismatch,), distance=1.0, best=1.0)


def test_run_feedback_leads_with_the_last_line() -> None:
    text = domain.run_feedback("error", "Traceback...\n  File x\nValueError: boom")
    assert text.splitlines()[0] == "ValueError: boom"


def test_summary() -> None:
    assert domain.percentile([1, 2, 3, 4], 0.5) == 2
    assert domain.percentile([], 0.95) == 0.0
