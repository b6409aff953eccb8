"""make_part: each part of the catalogue from its prompts, its defaults and checks, the script it
renders, and CannotMake (listing the catalogue) for what it cannot make."""

from __future__ import annotations

import ast
import json
import math

import pytest

from services.generator.ports import CannotMake
from services.generator.templates import CATALOGUE, PROVIDER, TemplatePart, make_part


def refusal(prompt: str, parent_script: str | None = None) -> str:
    with pytest.raises(CannotMake) as caught:
        make_part(prompt, parent_script=parent_script)
    assert caught.value.field == "prompt"
    return caught.value.message


def test_the_catalogue_has_the_parts_the_issue_names() -> None:
    kinds = [entry.kind for entry in CATALOGUE]
    assert kinds == [
        "box",
        "plate",
        "cylinder",
        "tube",
        "flange",
        "l_bracket",
        "standoff",
        "enclosure",
    ]
    assert PROVIDER == "templates"
    for entry in CATALOGUE:
        assert entry.description
        assert make_part(entry.example).kind == entry.kind


@pytest.mark.parametrize(
    ("prompt", "kind", "parameters"),
    [
        ("a 40 x 30 x 10 mm box", "box", {"length": 40, "width": 30, "height": 10}),
        ("box 4x3x1 cm", "box", {"length": 40, "width": 30, "height": 10}),
        ("a 20 mm cube", "box", {"length": 20, "width": 20, "height": 20}),
        ("cube, side 2 in", "box", {"length": 50.8, "width": 50.8, "height": 50.8}),
        ("block 50 long, 20 wide, 10 tall", "box", {"length": 50, "width": 20, "height": 10}),
        ("box 40 x 30, 10 mm high", "box", {"length": 40, "width": 30, "height": 10}),
        ("plate 100x60x5", "plate", {"length": 100, "width": 60, "thickness": 5, "holes": 0}),
        (
            "plate 100 by 60 by 5 mm with 4 holes of 6 mm",
            "plate",
            {"thickness": 5, "holes": 4, "hole_diameter": 6, "hole_inset": 9},
        ),
        ("plate 100 by 60 by 5 mm with four M5 holes", "plate", {"hole_diameter": 5.5}),
        ("plate 100x60x5 with M3 holes", "plate", {"holes": 4, "hole_diameter": 3.4}),
        ("plate 100x60, 8 mm thick", "plate", {"length": 100, "width": 60, "thickness": 8}),
        ("cylinder diameter 20 mm height 30", "cylinder", {"diameter": 20, "height": 30}),
        ("rod, radius 1 in, 10 in long", "cylinder", {"diameter": 50.8, "height": 254}),
        ("disc 50 mm diameter, 3 mm thick", "cylinder", {"diameter": 50, "height": 3}),
        (
            "tube OD 30 ID 24 length 50",
            "tube",
            {"outer_diameter": 30, "inner_diameter": 24, "length": 50},
        ),
        (
            "pipe diameter 30, wall 3, 100 long",
            "tube",
            {"outer_diameter": 30, "inner_diameter": 24, "length": 100},
        ),
        ("hollow cylinder OD 20 ID 10 height 5", "tube", {"outer_diameter": 20}),
        (
            "flange outer diameter 120, bore 40, thickness 12, 6 bolt holes of 10 mm "
            "on a 90 mm circle",
            "flange",
            {
                "outer_diameter": 120,
                "bore": 40,
                "thickness": 12,
                "holes": 6,
                "hole_diameter": 10,
                "bolt_circle": 90,
            },
        ),
        ("flange OD 100, bore 30, 10 thick, 4 M8 holes", "flange", {"hole_diameter": 9}),
        ("flange OD 100 bore 30 10 mm thick without holes", "flange", {"holes": 0}),
        (
            "L-bracket 50x40x30, 5 mm thick",
            "l_bracket",
            {"length": 50, "height": 40, "width": 30, "thickness": 5},
        ),
        (
            "angle bracket 60 long, 40 tall, 25 wide, thickness 3",
            "l_bracket",
            {"length": 60, "height": 40, "width": 25, "thickness": 3},
        ),
        (
            "standoff M3, 10 mm long, 6 mm across",
            "standoff",
            {"length": 10, "thread": 3, "hole_diameter": 2.5, "body_width": 6, "hex": 1},
        ),
        (
            "standoff M4 20 mm long",
            "standoff",
            {"thread": 4, "hole_diameter": 3.3, "body_width": 7, "hex": 1},
        ),
        ("round standoff M3 8 mm long", "standoff", {"body_width": 5.5, "hex": 0}),
        ("spacer diameter 8, bore 3.2, length 15", "standoff", {"hex": 0, "thread": 0}),
        (
            "enclosure 80x60x40 wall 2 mm",
            "enclosure",
            {"length": 80, "width": 60, "height": 40, "wall": 2, "lid": 0},
        ),
        ("enclosure 80x60x40 with a lid", "enclosure", {"wall": 2, "lid": 1}),
        ("project box 100x80x50, 3 mm walls, open top", "enclosure", {"wall": 3, "lid": 0}),
        ("enclosure box 80x60x40, 40 mm deep", "enclosure", {"height": 40}),
    ],
)
def test_parts_read_from_prompts(prompt: str, kind: str, parameters: dict[str, float]) -> None:
    part = make_part(prompt)
    assert part.kind == kind
    assert {k: part.parameters[k] for k in parameters} == pytest.approx(parameters)


@pytest.mark.parametrize(
    ("prompt", "defaulted"),
    [
        ("a 40 x 30 x 10 mm box", ()),
        ("plate 100x60x5 with 4 holes of 6 mm", ("hole_inset",)),
        ("plate 100x60x5 with holes of 6 mm", ("hole_inset", "holes")),
        ("plate 100x60x5 with 4 holes of 6 mm, 10 mm from the edges", ()),
        ("flange OD 100, bore 30, 10 thick, 4 M8 holes", ("bolt_circle",)),
        ("enclosure 80x60x40", ("lid", "wall")),
        ("standoff M3 10 long", ("body_width", "hex", "hole_diameter")),
    ],
)
def test_defaults_are_named(prompt: str, defaulted: tuple[str, ...]) -> None:
    part = make_part(prompt)
    assert part.defaulted == defaulted
    header_comment = part.script.split("import math")[0]
    for name in defaulted:
        assert f"#   {name} = " in header_comment
    if not defaulted:
        assert "# Defaulted: nothing" in header_comment


def test_holes_are_placed_near_the_edges_and_in_rows() -> None:
    def centres(prompt: str) -> list[tuple[float, float]]:
        line = next(
            ln for ln in make_part(prompt).script.splitlines() if ln.startswith("HOLE_CENTRES")
        )
        return [tuple(c) for c in ast.literal_eval(line.split(" = ", 1)[1])]

    assert centres("plate 100x60x5 with 4 holes of 6 mm") == [
        (9, 9),
        (91, 9),
        (9, 51),
        (91, 51),
    ]
    assert centres("plate 100x60x5 with 3 holes of 6 mm") == [(9, 30), (50, 30), (91, 30)]
    assert centres("plate 100x60x5 with 1 hole of 6 mm") == [(50, 30)]
    # the rows follow the longer side
    assert centres("plate 60x100x5 with 2 holes of 6 mm") == [(30, 9), (30, 91)]
    flange = centres("flange OD 120 bore 40 12 thick 4 holes of 10 on a 90 circle")
    for x, y in flange:
        assert math.hypot(x - 60, y - 60) == pytest.approx(45)
    assert flange[0] == pytest.approx((60 + 45 / math.sqrt(2), 60 + 45 / math.sqrt(2)))


@pytest.mark.parametrize(
    ("prompt", "volume"),
    [
        ("a 40 x 30 x 10 mm box", 12000),
        ("plate 100x60x5 with 4 holes of 6 mm", 30000 - 4 * math.pi * 9 * 5),
        ("tube OD 30 ID 24 length 50", math.pi / 4 * (900 - 576) * 50),
        ("L-bracket 50x40x30, 5 mm thick", 5 * 30 * (50 + 40 - 5)),
        ("enclosure 80x60x40 wall 2", 80 * 60 * 40 - 76 * 56 * 38),
        ("enclosure 80x60x40 wall 2 with lid", 80 * 60 * 40 - 76 * 56 * 36),
    ],
)
def test_expected_volume(prompt: str, volume: float) -> None:
    assert make_part(prompt).expected.volume_mm3 == pytest.approx(volume)


def test_expected_geometry_of_a_hex_standoff() -> None:
    expected = make_part("standoff M3, 10 mm long, 6 mm across").expected
    assert expected.bbox_mm == pytest.approx((12 / math.sqrt(3), 6, 10))
    assert expected.solids == 1


def test_an_enclosure_with_a_lid_is_two_solids() -> None:
    assert make_part("enclosure 80x60x40 with lid").expected.solids == 2


def test_the_script_follows_the_contract() -> None:
    part = make_part("plate 100 by 60 by 5 mm with four M5 holes")
    script = part.script
    ast.parse(script)
    first = script.splitlines()[0]
    assert first.startswith("# cadpipe-template: ")
    header = json.loads(first.removeprefix("# cadpipe-template: "))
    assert header["kind"] == "plate"
    assert header["parameters"] == part.parameters
    assert "FreeCADGui" not in script and "import FreeCAD" in script
    assert 'os.environ.get("FREECAD_OUTPUT")' in script
    for ext in ("FCStd", "step", "iges", "stl", "obj"):
        assert f'base + ".{ext}"' in script
    assert "provider" in script and "templates" in script


def test_the_prompt_in_the_comment_cannot_break_out_of_it() -> None:
    part = make_part('a 40 x 30 x 10 mm box\nimport shutil; shutil.rmtree("/")\n\u2028exit()')
    tree = ast.parse(part.script)
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import)]
    imported = {alias.name for node in imports for alias in node.names}
    assert imported == {"math", "os", "FreeCAD", "Mesh", "Part"}


def test_same_prompt_same_script() -> None:
    assert make_part("tube OD 30 ID 24 length 50") == make_part("tube OD 30 ID 24 length 50")
    assert isinstance(make_part("tube OD 30 ID 24 length 50"), TemplatePart)


@pytest.mark.parametrize(
    ("prompt", "why"),
    [
        ("", "names no part"),
        ("a teapot", "names no part"),
        ("a 10 mm sphere", "no sphere"),
        ("box 40x30x10 with fillets", "no fillets"),
        ("plate 100x60x5 with countersunk holes of 6", "no countersunk"),
        ("a box and a cylinder", "several parts"),
        ("box 40 x 30", "needs its height"),
        ("cylinder diameter 20", "needs its height"),
        ("tube OD 30 length 50", "needs its inner diameter"),
        ("L-bracket 50x40x30", "needs its thickness"),
        ("plate 100x60x5 with 4 holes", "size of the holes"),
        ("plate 10x10x2 with 4 holes of 12 mm", "do not fit"),
        ("plate 20x20x2 with 4 holes of 6 mm", "do not fit"),
        ("plate 100x60x5 with 4 holes of 6 mm, 2 mm from the edges", "break through the edge"),
        ("plate 100x60x5 with 40 holes of 6 mm", "do not fit"),
        ("plate 100x60x5 with 100 holes of 1 mm", "at most 64"),
        ("enclosure 80x60x40 wall 30", "thinner than half"),
        ("enclosure 80x60x40 wall 20 with lid", "thinner than half"),
        ("tube OD 30 ID 34 length 50", "below its outer diameter"),
        ("pipe OD 30 wall 15, 20 long", "fills a tube"),
        ("flange OD 120 bore 130 thickness 12 without holes", "smaller than the flange"),
        ("flange OD 120 bore 40 thickness 12", "needs its bolt holes"),
        ("flange OD 120 bore 40 thickness 12, 6 holes of 10 on a 50 circle", "into the 40 mm bore"),
        ("flange OD 120 bore 40 thickness 12, 6 holes of 10 on a 115 circle", "rim"),
        ("flange OD 120 bore 40 thickness 12, 12 holes of 22 on a 84 circle", "do not fit"),
        ("L-bracket 50x40x30, 45 mm thick", "legs longer"),
        ("standoff M3 10 long 3 mm across", "does not fit"),
        ("standoff M7 10 long", "no tap drill is known for M7"),
        ("plate 100x60x5 with 4 M7 holes", "no clearance hole is known for M7"),
        ("standoff 10 long", "thread"),
        ("box 40x30x10 with 4 holes of 5 mm", "a box has no holes"),
        ("cylinder 20 x 30", "not sized 'A x B x C'"),
        ("box 40x30x10x5", "gives 4 numbers"),
        ("box 40x30x10 and 20x20x20", "two sets"),
        ("box 40x30x10 mm, thickness 5", "a box has no 'thickness'"),
        ("cylinder 20 mm diameter 30 mm height", "could not tell what 20 mm is"),
        ("plate 100x60x5 M5", "could not tell what M5 is"),
        ("box 40 x 30 x 10, 20 mm long", "given twice"),
        ("box 40 x 30 x 0 mm", "outside what templates make"),
        ("box 40 x 30 x 20 m", "outside what templates make"),
        ("a box with a lid 40x30x10", "'lid' does not apply to a box"),
        ("a cube on a circle, 20 mm", "a box has no 'circle'"),
        ("a thin disc 20 mm diameter 3 mm high, wall", "a cylinder has no 'wall'"),
        ("a bigger box 40x30x10", "not relative"),
        ("cylinder 40 in diameter 20 high", "ambiguous"),
    ],
)
def test_refusals_say_why_and_list_the_catalogue(prompt: str, why: str) -> None:
    message = refusal(prompt)
    assert why in message
    for entry in CATALOGUE:
        assert entry.kind in message
    assert "plate 100 by 60 by 5 mm with 4 holes of 6 mm" in message
