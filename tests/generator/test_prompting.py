"""What the model is told (system prompt, first round, edit, repair) and how a script is taken
from its answer."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from services.generator import ports, prompting

TRACEBACK = """\
Traceback (most recent call last):
  File "/tmp/job/part_v2.py", line 7, in <module>
    shape = Part.makeBox(20, 20, 0)
Part.OCCError: Both planes are parallel or the height is zero"""

BOX = ports.Expected(bbox_mm=(20.0, 20.0, 10.0), volume_mm3=3497.345, solids=1)


def test_the_system_prompt_states_the_version_and_the_script_contract() -> None:
    text = prompting.system_prompt("0.20.2")
    assert "FreeCAD 0.20.2" in text
    assert 'os.environ["FREECAD_OUTPUT"]' in text
    assert "FreeCADGui" in text and "PySide" in text and "Never import" in text
    for name in ("MyHeadlessModel.FCStd", ".step", ".stl", ".obj", ".iges"):
        assert name in text
    assert "millimetres" in text
    assert "0.20 and 1.0" in text


def test_the_example_in_the_system_prompt_is_a_script_that_follows_the_contract() -> None:
    example = prompting.extract_script(prompting.system_prompt("1.0.0"))
    ast.parse(example)
    assert "import FreeCAD" in example and "FREECAD_OUTPUT" in example
    assert "FreeCADGui" not in example


def test_a_first_round_tells_the_prompt_and_the_expected_geometry() -> None:
    request = ports.ScriptRequest(
        prompt="a 20 mm box with a hole", freecad_version="1.0", expected=BOX
    )
    text = prompting.user_message(request)
    assert "a 20 mm box with a hole" in text
    assert "bounding box 20 x 20 x 10 mm (within 0.5 mm)" in text
    assert "volume 3497.345 mm³ (within 2%)" in text
    assert "1 solid" in text
    assert "Attempt" not in text


def test_a_first_round_without_expectations_says_nothing_of_geometry() -> None:
    text = prompting.user_message(ports.ScriptRequest(prompt="a gear", freecad_version="1.0"))
    assert "must measure" not in text
    assert "```python" in text


def test_messages_are_the_system_prompt_then_the_request() -> None:
    request = ports.ScriptRequest(prompt="a cube", freecad_version="0.20")
    system, user = prompting.messages(request)
    assert system["role"] == "system" and "FreeCAD 0.20" in system["content"]
    assert user["role"] == "user" and "a cube" in user["content"]


def test_an_edit_carries_the_parent_script_and_the_change() -> None:
    parent = "import FreeCAD\nimport Part\nshape = Part.makeBox(10, 10, 10)\n"
    request = ports.ScriptRequest(
        prompt="make it twice as tall", freecad_version="1.0", parent_script=parent
    )
    text = prompting.user_message(request)
    assert "make it twice as tall" in text
    assert f"```python\n{parent.rstrip()}\n```" in text
    assert "Change this existing script" in text


def test_a_repair_carries_each_attempt_its_error_line_and_measured_vs_expected() -> None:
    failed_run = ports.Attempt(
        round=1,
        script="import Part\nshape = Part.makeBox(20, 20, 0)\n",
        feedback=f"{TRACEBACK.splitlines()[-1]}\n--- log tail ---\n{TRACEBACK}",
    )
    wrong_size = ports.Attempt(
        round=2,
        script="import Part\nshape = Part.makeBox(20, 20, 5)\n",
        feedback="bounding box 20 x 20 x 5 mm, expected 20 x 20 x 10 mm",
        measured=ports.Measured(
            bbox_mm=(20.0, 20.0, 5.0), volume_mm3=1748.67, area_mm2=1200.0, solids=1, valid=True
        ),
    )
    request = ports.ScriptRequest(
        prompt="a box with a hole",
        freecad_version="1.0",
        expected=BOX,
        attempts=(failed_run, wrong_size),
    )
    text = prompting.user_message(request)
    assert "Part.OCCError: Both planes are parallel or the height is zero" in text
    assert "Part.makeBox(20, 20, 0)" in text and "Part.makeBox(20, 20, 5)" in text
    assert text.index("Attempt 1") < text.index("Attempt 2")
    assert "bounding box 20 x 20 x 5 mm (expected 20 x 20 x 10 mm)" in text
    assert "volume 1748.67 mm³ (expected 3497.345 mm³)" in text
    assert "solids 1 (expected 1)" in text
    assert "Fix the problem of the last attempt" in text


def test_long_feedback_keeps_the_error_line_and_the_log_tail() -> None:
    feedback = "ValueError: no such face\n" + "noise\n" * 2000 + "the last log line"
    attempt = ports.Attempt(round=1, script="import Part\n", feedback=feedback)
    text = prompting.user_message(
        ports.ScriptRequest(prompt="p", freecad_version="1.0", attempts=(attempt,))
    )
    assert "ValueError: no such face" in text
    assert "the last log line" in text
    assert len(text) < prompting.FEEDBACK_CHARS + 1000


def test_an_invalid_shape_is_told() -> None:
    measured = ports.Measured((1.0, 1.0, 1.0), 1.0, 6.0, 1, valid=False)
    assert "not valid" in prompting.describe_measured(measured, ports.Expected())


SCRIPT = "import FreeCAD\nimport Part\nPart.makeBox(1, 2, 3)\n"


@pytest.mark.parametrize(
    "answer",
    [
        f"Here is the script:\n```python\n{SCRIPT}```\nIt makes a box.",
        f"```py\n{SCRIPT}```",
        f"```Python\n{SCRIPT}\n```",
        f"```\n{SCRIPT}```",
        SCRIPT,
        f"<think>The user wants a box. ```python\nimport os\n```</think>\n```python\n{SCRIPT}```",
        f"  ```python\n{SCRIPT}  ```\n",
    ],
)
def test_the_script_is_taken_from_a_fenced_block_or_plain_code(answer: str) -> None:
    assert prompting.extract_script(answer) == SCRIPT


def test_of_several_python_blocks_the_longest_is_the_script() -> None:
    answer = f"First:\n```python\nimport Part\n```\nThe whole script:\n```python\n{SCRIPT}```"
    assert prompting.extract_script(answer) == SCRIPT


@pytest.mark.parametrize(
    "answer",
    [
        "I cannot make that part.",
        "Sorry",
        "x = 1",  # compiles, imports nothing: not a script
        "```bash\nfreecadcmd part.py\n```",
        f"```python\n{SCRIPT}",  # cut off before the fence closed
        "Here you go: import FreeCAD and make a box",
        "```\nSome prose in a fence.\n```",
    ],
)
def test_anything_else_is_refused(answer: str) -> None:
    with pytest.raises(prompting.NoScript):
        prompting.extract_script(answer)


@pytest.mark.freecad
@pytest.mark.timeout(180)
def test_the_example_told_to_the_model_runs_in_freecad_and_writes_the_five_files(
    tmp_path: Path,
) -> None:
    """The example is what models copy: it must itself follow the contract on the FreeCAD the
    workers run (Debian's freecadcmd)."""
    freecadcmd = shutil.which("freecadcmd")
    if freecadcmd is None:
        pytest.skip("freecadcmd is not installed (make freecad)")
    script = tmp_path / "example.py"
    script.write_text(prompting.extract_script(prompting.system_prompt("0.20")))
    out = tmp_path / "out"
    out.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "FREECAD_OUTPUT": str(out)}
    run = subprocess.run(
        [freecadcmd, str(script)], env=env, capture_output=True, text=True, timeout=150
    )
    assert run.returncode == 0, run.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "MyHeadlessModel.FCStd",
        "MyHeadlessModel.iges",
        "MyHeadlessModel.obj",
        "MyHeadlessModel.step",
        "MyHeadlessModel.stl",
    ]
