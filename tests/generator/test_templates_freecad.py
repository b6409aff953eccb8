"""Every catalogue part through real FreeCAD: the script the templates render runs headless with
FREECAD_OUTPUT set, writes the five files, and the STEP file it wrote measures what the prompt
asked for (bounding box within 0.01 mm, volume within 0.5 %, the number of solids, valid).

All parts run in one freecadcmd process (templates_runner.py), so FreeCAD starts once; each part
is still its own test."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from services.generator.templates import CATALOGUE, TemplatePart, make_part

pytestmark = [
    pytest.mark.freecad,
    pytest.mark.skipif(shutil.which("freecadcmd") is None, reason="freecadcmd is not installed"),
]

RUNNER = Path(__file__).with_name("templates_runner.py")
FILES = sorted(f"MyHeadlessModel.{ext}" for ext in ("FCStd", "step", "iges", "stl", "obj"))
SQRT3 = math.sqrt(3)

# name -> (prompt, bounding box the prompt asks for, its volume worked out by hand, solids);
# "parent prompt | edit prompt" is an edit of the parent's script.
CASES: dict[str, tuple[str, tuple[float, float, float], float, int]] = {
    "box": ("a 40 x 30 x 10 mm box", (40, 30, 10), 40 * 30 * 10, 1),
    "box_cm": ("box 4x3x1 cm", (40, 30, 10), 12000, 1),
    "plate": (
        "plate 100 by 60 by 5 mm with 4 holes of 6 mm",
        (100, 60, 5),
        100 * 60 * 5 - 4 * math.pi * 3**2 * 5,
        1,
    ),
    "plate_m5_odd": (
        "plate 120 x 40 x 4 mm with five M5 holes",
        (120, 40, 4),
        120 * 40 * 4 - 5 * math.pi * 2.75**2 * 4,
        1,
    ),
    "cylinder": ("cylinder diameter 20 mm height 30", (20, 20, 30), math.pi * 10**2 * 30, 1),
    "cylinder_inch": (
        "cylinder radius 1 in, 2 in tall",
        (50.8, 50.8, 50.8),
        math.pi * 25.4**2 * 50.8,
        1,
    ),
    "tube": ("tube OD 30 ID 24 length 50", (30, 30, 50), math.pi / 4 * (30**2 - 24**2) * 50, 1),
    "flange": (
        "flange outer diameter 120, bore 40, thickness 12, 6 bolt holes of 10 mm on a 90 mm circle",
        (120, 120, 12),
        math.pi / 4 * (120**2 - 40**2) * 12 - 6 * math.pi / 4 * 10**2 * 12,
        1,
    ),
    "l_bracket": ("L-bracket 50x40x30, 5 mm thick", (50, 30, 40), 50 * 30 * 5 + 5 * 30 * 35, 1),
    "standoff": (
        "standoff M3, 10 mm long, 6 mm across",
        (12 / SQRT3, 6, 10),
        SQRT3 / 2 * 6**2 * 10 - math.pi / 4 * 2.5**2 * 10,
        1,
    ),
    "standoff_round": (
        "round spacer diameter 8 mm, bore 3.2, length 15",
        (8, 8, 15),
        math.pi / 4 * (8**2 - 3.2**2) * 15,
        1,
    ),
    "enclosure": (
        "enclosure 80x60x40 wall 2 mm",
        (80, 60, 40),
        80 * 60 * 40 - 76 * 56 * 38,
        1,
    ),
    "enclosure_lid": (
        "enclosure 80x60x40 mm, wall 2 mm, with a lid",
        (80, 60, 40),
        80 * 60 * 40 - 76 * 56 * 36,
        2,
    ),
    "plate_edited": (
        "plate 100 by 60 by 5 mm with 4 holes of 6 mm | add 2 more holes | make the holes M8",
        (100, 60, 5),
        100 * 60 * 5 - 6 * math.pi * 4.5**2 * 5,
        1,
    ),
    "standoff_edited": (
        "standoff M3 10 mm long | make it M5, 16 mm long",
        (16 / SQRT3, 8, 16),
        SQRT3 / 2 * 8**2 * 16 - math.pi / 4 * 4.2**2 * 16,
        1,
    ),
}


def made(prompts: str) -> TemplatePart:
    """The part of a prompt, or of a chain of edits "parent | edit | edit"."""
    first, *edits = (p.strip() for p in prompts.split("|"))
    part = make_part(first)
    for edit in edits:
        part = make_part(edit, parent_script=part.script)
    return part


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Renders every case, runs them all in one freecadcmd, returns what each measured."""
    root = tmp_path_factory.mktemp("templates")
    jobs = []
    for name, (prompt, *_) in CASES.items():
        script = root / f"{name}.py"
        script.write_text(made(prompt).script, encoding="utf-8")
        jobs.append({"name": name, "script": str(script), "output": str(root / name)})
    results_path = root / "results.json"
    jobs_path = root / "jobs.json"
    jobs_path.write_text(json.dumps({"results": str(results_path), "jobs": jobs}))
    run = subprocess.run(
        ["freecadcmd", str(RUNNER)],
        cwd=root,
        env={**os.environ, "CADPIPE_TEMPLATE_JOBS": str(jobs_path)},
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert results_path.exists(), run.stdout[-2000:] + run.stderr[-2000:]
    return {r["name"]: r for r in json.loads(results_path.read_text())}


def test_every_catalogue_kind_is_measured() -> None:
    assert {entry.kind for entry in CATALOGUE} <= {made(c[0]).kind for c in CASES.values()}


@pytest.mark.parametrize("name", list(CASES))
def test_part_measures_what_the_prompt_asks(name: str, measured: dict[str, dict[str, Any]]) -> None:
    prompt, bbox, volume, solids = CASES[name]
    part = made(prompt)
    result = measured[name]

    assert "error" not in result, result["error"]
    assert result["files"] == FILES
    assert result["valid"] is True
    assert result["solids"] == solids == part.expected.solids
    # The part sits in the positive octant, a corner of its bounding box at the origin.
    assert result["bbox_min"] == pytest.approx([0, 0, 0], abs=0.01)
    assert result["bbox"] == pytest.approx(list(bbox), abs=0.01)
    assert part.expected.bbox_mm == pytest.approx(bbox, abs=1e-6)
    assert result["volume"] == pytest.approx(volume, rel=0.005)
    assert part.expected.volume_mm3 == pytest.approx(volume, rel=1e-9)
