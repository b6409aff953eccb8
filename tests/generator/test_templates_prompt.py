"""Reading prompts: numbers, units, dimension groups, labels, hole phrases; refusing what cannot
be read without guessing."""

from __future__ import annotations

import pytest

from services.generator.templates.parts import PART_WORDS
from services.generator.templates.prompt import Length, PromptError, Reading, Thread, read


def reading(prompt: str) -> Reading:
    return read(prompt, PART_WORDS)


def labelled(prompt: str) -> dict[str, float]:
    found = {}
    for item in reading(prompt).labelled:
        assert isinstance(item.value, Length)
        found[item.label] = item.value.mm
    return found


def group(prompt: str) -> list[float]:
    (only,) = reading(prompt).groups
    return [m.mm for m in only]


@pytest.mark.parametrize(
    ("prompt", "sizes"),
    [
        ("a 40 x 30 x 10 mm box", [40, 30, 10]),
        ("box 4x3x1 cm", [40, 30, 10]),
        ("box 40x30x10mm", [40, 30, 10]),
        ("plate 100 by 60 by 5 mm", [100, 60, 5]),
        ("block 40 mm x 30 mm x 10 mm", [40, 30, 10]),
        ("box 2 x 1.5 x 0.5 in", [50.8, 38.1, 12.7]),
        ('box 2" x 1" x 1"', [50.8, 25.4, 25.4]),
        ("box 0.1 x 0.2 x 0.05 m", [100, 200, 50]),
        ("box 1 x 1 x 0.5 ft", [304.8, 304.8, 152.4]),
        ("box 40 \u00d7 30 \u00d7 10", [40, 30, 10]),
        ("box 40*30*10 millimetres", [40, 30, 10]),
        ("box 4 by 3 by 1 centimeters", [40, 30, 10]),
        ("box 1/2 x 1/4 x 1 inch", [12.7, 6.35, 25.4]),
        ("a box 4 x 3 x 1, all sizes in inches", [101.6, 76.2, 25.4]),
        ("box 40 x 30 x 10", [40, 30, 10]),
    ],
)
def test_dimension_groups_and_units(prompt: str, sizes: list[float]) -> None:
    assert group(prompt) == pytest.approx(sizes)


@pytest.mark.parametrize(
    ("prompt", "found"),
    [
        ("cylinder diameter 20 mm height 30", {"diameter": 20, "height": 30}),
        ("a 20 mm diameter cylinder, 30 mm tall", {"diameter": 20, "tall": 30}),
        ("cylinder with a diameter of 20 and a height of 30", {"diameter": 20, "height": 30}),
        ("cylinder radius 1 in height 2 in", {"radius": 25.4, "height": 50.8}),
        ("rod 2 in tall, 1 inch diameter", {"tall": 50.8, "diameter": 25.4}),
        ("cylinder diameter: 20, height = 30", {"diameter": 20, "height": 30}),
        ("cylinder 40 mm in diameter, 10 high", {"diameter": 40, "tall": 10}),
        ("tube OD 30 ID 24 length 50", {"outer_diameter": 30, "inner_diameter": 24, "length": 50}),
        (
            "tube outer diameter 30, inside diameter 24, 50 long",
            {"outer_diameter": 30, "inner_diameter": 24, "long": 50},
        ),
        ("standoff M3, 10 mm long, 6 mm across", {"long": 10, "across": 6}),
        ("standoff 6 mm across flats", {"across": 6}),
        ("L-bracket 50x40x30, 5 mm thick", {"thick": 5}),
        ("enclosure 80x60x40 wall 2 mm", {"wall": 2}),
        ("enclosure 80x60x40 with 2 mm walls", {"wall": 2}),
        ("flange bore 40, thickness 12", {"bore": 40, "thickness": 12}),
        ("flange holes on a 90 mm circle", {"circle": 90}),
        ("flange with a PCD of 90", {"circle": 90}),
        ("flange ø120", {"diameter": 120}),
        ("plate, holes 10 mm from the edges", {"from_edge": 10}),
        ("cylinder diameter 2 cm height 3", {"diameter": 20, "height": 30}),
    ],
)
def test_labels_bind_to_their_number(prompt: str, found: dict[str, float]) -> None:
    assert labelled(prompt) == pytest.approx(found)


@pytest.mark.parametrize(
    ("prompt", "count", "size", "added"),
    [
        ("plate with 4 holes of 6 mm", 4, Length(6, "6 mm"), False),
        ("plate with four M5 holes", 4, Thread(5, "M5"), False),
        ("plate with 4 x M5 holes", 4, Thread(5, "M5"), False),
        ("plate with 4x 6 mm holes", 4, Length(6, "6 mm"), False),
        ("plate with 6 mm diameter holes", None, Length(6, "6 mm"), False),
        ("plate with holes of diameter 6", None, Length(6, "6"), False),
        ("plate with 2 holes 8 mm diameter", 2, Length(8, "8 mm"), False),
        ("flange, 6 bolt holes of 10 mm on a 90 mm circle", 6, Length(10, "10 mm"), False),
        ("flange with six M10 bolt holes", 6, Thread(10, "M10"), False),
        ("add 2 more holes", 2, None, True),
        ("add 2 holes", 2, None, True),
        ("make the holes 8 mm", None, Length(8, "8 mm"), False),
        ("make the holes M6", None, Thread(6, "M6"), False),
        ("plate with a hole of 10 mm", 1, Length(10, "10 mm"), False),
        ("plate with twelve holes of 3 mm", 12, Length(3, "3 mm"), False),
    ],
)
def test_hole_phrases(prompt: str, count: int | None, size: object, added: bool) -> None:
    (phrase,) = reading(prompt).holes
    assert (phrase.count, phrase.size, phrase.added) == (count, size, added)


def test_holes_and_a_label_after_them_keep_apart() -> None:
    r = reading("plate 100x60x5 with 4 holes of 6 mm, 10 mm from the edges")
    assert r.holes[0].size == Length(6, "6 mm")
    assert labelled("plate 100x60x5 with 4 holes of 6 mm, 10 mm from the edges") == {
        "from_edge": 10
    }


def test_a_count_is_not_a_length() -> None:
    r = reading("plate 100 by 60 by 5 mm with 4 holes of 6 mm")
    assert r.loose == ()
    assert r.holes[0].count == 4


def test_parts_flags_and_features() -> None:
    r = reading("an open-top enclosure box with a lid, fillets and 45 degrees")
    assert [kind for kind, _ in r.parts] == ["enclosure", "box"]
    assert r.flags == {"no_lid", "lid"}
    assert set(r.unsupported) == {"fillets", "degrees"}


def test_number_words_and_relative_words() -> None:
    r = reading("make it twice as thick with three holes")
    assert r.relative == ("twice",)
    assert r.holes[0].count == 3


def test_loose_numbers_are_reported_not_dropped() -> None:
    r = reading("cylinder 20 mm diameter 30 mm height")
    assert [m.text for m in r.loose] == ["20 mm"]


def test_loose_thread() -> None:
    assert reading("standoff M2.5").loose_threads == (Thread(2.5, "M2.5"),)


def test_dangling_label() -> None:
    assert reading("a thick plate").dangling == (("thick", "thick"),)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("cylinder 40 in diameter", "ambiguous"),
        ("box 1 in x 20 mm x 5", "mixes units"),
        ("cylinder diameter 1 in height 20 mm length 5", "mixes units"),
        ("box 1/0 x 2 x 3", "not a number"),
        ("plate with 2.5 holes", "whole"),
        ("box 4 x 3 x 1 in mm, sizes in inches", "two units"),
    ],
)
def test_ambiguous_prompts_are_refused(prompt: str, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        reading(prompt)


def test_quotation_marks_are_not_inch_marks() -> None:
    assert group('make "a box 40 x 30 x 10"') == [40, 30, 10]
    assert group('box 2" x 1" x 1"') == pytest.approx([50.8, 25.4, 25.4])


@pytest.mark.parametrize(
    ("prompt", "count"), [("remove 2 holes", -2), ("2 fewer holes", -2), ("2 extra holes", 2)]
)
def test_holes_taken_away(prompt: str, count: int) -> None:
    (phrase,) = reading(prompt).holes
    assert (phrase.count, phrase.added) == (count, True)


@pytest.mark.parametrize(
    ("prompt", "unit_mm"),
    [
        ("box 4x3x1 in", 25.4),
        ("box 4x3x1 in, with a lid", 25.4),
        ("box 4x3x1 in with 2 holes", 25.4),
        ("box 4x3x1 mm in steel", 1),
    ],
)
def test_in_after_a_number_is_inches(prompt: str, unit_mm: float) -> None:
    assert group(prompt)[0] == pytest.approx(4 * unit_mm)


def test_in_before_an_unknown_word_is_refused() -> None:
    with pytest.raises(PromptError, match="inches"):
        reading("plate 100x60x5 in aluminium")


def test_a_very_long_prompt_is_refused() -> None:
    with pytest.raises(PromptError, match="at most 2000"):
        reading("box 40 x 30 x 10 mm " + "please " * 400)
