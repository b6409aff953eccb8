"""Edits: a prompt with a parent script the templates wrote starts from the parent's parameters
and changes what the prompt names; anything else is refused."""

from __future__ import annotations

import pytest

from services.generator.ports import CannotMake
from services.generator.templates import make_part

PLATE = "plate 100 by 60 by 5 mm with 4 holes of 6 mm"


def edit(parent_prompt: str, prompt: str) -> dict[str, float]:
    return make_part(prompt, parent_script=make_part(parent_prompt).script).parameters


@pytest.mark.parametrize(
    ("parent", "prompt", "changed"),
    [
        (PLATE, "make the holes 8 mm", {"hole_diameter": 8, "hole_inset": 12}),
        (PLATE, "make the holes M5", {"hole_diameter": 5.5}),
        (PLATE, "make it 20 mm thick", {"thickness": 20, "hole_diameter": 6}),
        (PLATE, "add 2 more holes", {"holes": 6, "hole_diameter": 6}),
        (PLATE, "6 holes", {"holes": 6}),
        (PLATE, "remove 2 holes", {"holes": 2}),
        (PLATE, "2 fewer holes", {"holes": 2}),
        (PLATE, "remove the holes", {"holes": 0, "hole_diameter": 0, "hole_inset": 0}),
        (PLATE, "make it 120 x 80", {"length": 120, "width": 80, "thickness": 5}),
        (PLATE, "holes 12 mm from the edges", {"hole_inset": 12, "hole_diameter": 6}),
        ("plate 100x60x5", "add 4 holes of 5 mm", {"holes": 4, "hole_diameter": 5}),
        ("a 40 x 30 x 10 mm box", "make it 50 mm tall", {"height": 50, "length": 40}),
        ("a 40 x 30 x 10 mm box", "make the box 2 in long", {"length": 50.8}),
        ("cylinder diameter 20 height 30", "make it 40 mm in diameter", {"diameter": 40}),
        ("tube OD 30 ID 24 length 50", "make the wall 2 mm", {"inner_diameter": 26}),
        ("enclosure 80x60x40 wall 2", "add a lid", {"lid": 1, "wall": 2}),
        ("enclosure 80x60x40 wall 2 with a lid", "without lid", {"lid": 0}),
        (
            "standoff M3 10 mm long",
            "make it M4",
            {"thread": 4, "hole_diameter": 3.3, "body_width": 7, "length": 10},
        ),
        ("standoff M3, 10 long, 6 across", "make it M4", {"thread": 4, "body_width": 6}),
        (
            "flange OD 120 bore 40 12 thick, 4 holes of 10",
            "make the bore 50",
            {"bore": 50, "bolt_circle": 85},
        ),
        (
            "flange OD 120 bore 40 12 thick, 4 holes of 10 on a 90 mm circle",
            "make the bore 50",
            {"bore": 50, "bolt_circle": 90},
        ),
    ],
)
def test_edit_changes_what_the_prompt_names(
    parent: str, prompt: str, changed: dict[str, float]
) -> None:
    before = make_part(parent).parameters
    after = edit(parent, prompt)
    assert {k: after[k] for k in changed} == pytest.approx(changed)
    untouched = set(before) - set(changed) - {"hole_inset", "bolt_circle", "inner_diameter"}
    if "thread" in changed:
        untouched -= {"hole_diameter", "body_width"}
    if changed.get("holes") == 0:
        untouched -= {"hole_diameter", "hole_inset"}
    assert {k: after[k] for k in untouched} == {k: before[k] for k in untouched}


def test_an_edit_can_be_edited_again_and_keeps_what_was_defaulted() -> None:
    first = make_part("enclosure 80x60x40")
    second = make_part("make it 50 mm tall", parent_script=first.script)
    third = make_part("with a lid", parent_script=second.script)
    assert third.parameters == {"length": 80, "width": 60, "height": 50, "wall": 2, "lid": 1}
    assert "wall" in third.defaulted
    assert "defaulted in the script this edits" in third.script


def refusal(prompt: str, parent_script: str) -> str:
    with pytest.raises(CannotMake) as caught:
        make_part(prompt, parent_script=parent_script)
    message = caught.value.message
    assert "box ('a 40 x 30 x 10 mm box')" in message  # the catalogue, as for every refusal
    return message


def test_a_script_without_the_header_is_not_edited() -> None:
    message = refusal("make it 20 mm thick", "import FreeCAD\nprint('hello')\n")
    assert "only edit scripts they wrote" in message


def test_a_script_changed_by_hand_is_not_edited() -> None:
    script = make_part(PLATE).script.replace("HOLE_DIAMETER = 6.0", "HOLE_DIAMETER = 7.0")
    assert "changed since" in refusal("make it 8 mm thick", script)


def test_a_damaged_header_is_not_edited() -> None:
    script = make_part(PLATE).script.replace('"kind": "plate"', '"kind": "pl')
    assert "cannot be read" in refusal("make it 8 mm thick", script)


@pytest.mark.parametrize(
    ("prompt", "why"),
    [
        ("make it a cylinder", "do not turn it into a cylinder"),
        ("make it nicer", "found nothing to change"),
        ("make it thick", "'thick' has no number"),
        ("make it twice as thick", "not relative"),
        ("make the holes 50 mm", "do not fit"),
        ("remove 5 holes", "fewer holes than the prompt removes"),
        ("add a fillet", "no fillet"),
        ("make it 20 mm in diameter", "a plate has no 'diameter'"),
    ],
)
def test_edits_that_are_refused(prompt: str, why: str) -> None:
    assert why in refusal(prompt, make_part(PLATE).script)
