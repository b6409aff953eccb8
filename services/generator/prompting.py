"""What a chat model is told, and how its script is taken from its answer. Pure: no I/O.

The system prompt carries the script contract the workers enforce (headless FreeCAD, outputs
into $FREECAD_OUTPUT); the user message carries the request: a first round, an edit of a
parent script, or a repair that shows every earlier attempt with what went wrong.
"""

from __future__ import annotations

import ast
import re

from services.generator import ports

FEEDBACK_CHARS = 3000
"""Most characters of one attempt's feedback told to the model (its first line is kept)."""

_EXAMPLE = """\
import os

import FreeCAD
import Mesh
import Part

doc = FreeCAD.newDocument("Model")
# a 20 x 20 x 10 mm box with a 4 mm radius hole through its centre
shape = Part.makeBox(20, 20, 10).cut(Part.makeCylinder(4, 10, FreeCAD.Vector(10, 10, 0)))
feature = doc.addObject("Part::Feature", "Body")
feature.Shape = shape
doc.recompute()

base = os.path.join(os.environ["FREECAD_OUTPUT"], "MyHeadlessModel")
doc.saveAs(base + ".FCStd")
Part.export([feature], base + ".step")
Part.export([feature], base + ".iges")
Mesh.export([feature], base + ".stl")
Mesh.export([feature], base + ".obj")
"""


def system_prompt(freecad_version: str) -> str:
    return f"""\
You write Python scripts for FreeCAD {freecad_version}, run headless by `freecadcmd` on a \
server. Answer with exactly one complete script in one ```python fenced block.

The script contract:
- Headless: use `import FreeCAD`, `Part`, `Mesh` (and `Sketcher`, `PartDesign` if needed). \
Never import FreeCADGui, PySide or any GUI module; there is no display.
- Units are millimetres. The model is one valid solid unless asked otherwise.
- Save the document as `MyHeadlessModel.FCStd` and export `MyHeadlessModel.step`, \
`MyHeadlessModel.stl`, `MyHeadlessModel.obj` and `MyHeadlessModel.iges`, all in the \
directory named by `os.environ["FREECAD_OUTPUT"]`. Write nothing anywhere else.
- No network, no subprocesses, no reading of other files, no input(): the script runs \
unattended with a time limit.
- Use only APIs that work on both FreeCAD 0.20 and 1.0 (Part.makeBox, makeCylinder, \
makeSphere, makeCone, makeTorus, cut, fuse, common, makeFillet, makeChamfer, extrude, \
revolve, Part.Face/Wire/Edge from Part.LineSegment, Part.Circle, FreeCAD.Vector, \
FreeCAD.Placement, FreeCAD.Rotation).
- Call doc.recompute() before saving.

A script that follows the contract:
```python
{_EXAMPLE}```
"""


def user_message(request: ports.ScriptRequest) -> str:
    """The request told to the model: a first round, an edit, or a repair of earlier attempts."""
    parts = [f"Make this part: {request.prompt.strip()}"]
    expected = describe_expected(request.expected)
    if expected:
        parts.append(f"It must measure:\n{expected}")
    if request.parent_script is not None:
        parts.append(
            "Change this existing script as asked above; keep everything the request does not "
            f"change:\n```python\n{_fence_safe(request.parent_script)}\n```"
        )
    for attempt in request.attempts:
        parts.append(_attempt_section(attempt, request.expected))
    if request.attempts:
        parts.append(
            "Fix the problem of the last attempt. Answer with the whole corrected script in one "
            "```python block."
        )
    else:
        parts.append("Answer with the whole script in one ```python block.")
    return "\n\n".join(parts)


def messages(request: ports.ScriptRequest) -> list[dict[str, str]]:
    """The chat messages of a request: the system prompt, then one user message."""
    return [
        {"role": "system", "content": system_prompt(request.freecad_version)},
        {"role": "user", "content": user_message(request)},
    ]


def describe_expected(expected: ports.Expected) -> str:
    """The expected geometry as lines for a person or a model; empty when nothing is expected."""
    lines = []
    if expected.bbox_mm is not None:
        x, y, z = expected.bbox_mm
        lines.append(
            f"- bounding box {_mm(x)} x {_mm(y)} x {_mm(z)} mm "
            f"(within {_mm(expected.bbox_tolerance_mm)} mm)"
        )
    if expected.volume_mm3 is not None:
        lines.append(
            f"- volume {_mm(expected.volume_mm3)} mm³ (within {expected.volume_tolerance:.0%})"
        )
    if expected.solids is not None:
        lines.append(f"- {expected.solids} solid{'s' if expected.solids != 1 else ''}")
    return "\n".join(lines)


def describe_measured(measured: ports.Measured, expected: ports.Expected) -> str:
    """Measured against expected, one line per quantity."""
    x, y, z = measured.bbox_mm
    bbox = f"bounding box {_mm(x)} x {_mm(y)} x {_mm(z)} mm"
    if expected.bbox_mm is not None:
        ex, ey, ez = expected.bbox_mm
        bbox += f" (expected {_mm(ex)} x {_mm(ey)} x {_mm(ez)} mm)"
    volume = f"volume {_mm(measured.volume_mm3)} mm³"
    if expected.volume_mm3 is not None:
        volume += f" (expected {_mm(expected.volume_mm3)} mm³)"
    solids = f"solids {measured.solids}"
    if expected.solids is not None:
        solids += f" (expected {expected.solids})"
    lines = [f"- {bbox}", f"- {volume}", f"- {solids}"]
    if not measured.valid:
        lines.append("- the shape is not valid (FreeCAD's shape check failed)")
    return "\n".join(lines)


def _attempt_section(attempt: ports.Attempt, expected: ports.Expected) -> str:
    section = [
        f"Attempt {attempt.round} was this script:\n```python\n{_fence_safe(attempt.script)}\n```",
        f"What went wrong:\n{_clip(attempt.feedback.strip()) or '(no details)'}",
    ]
    if attempt.measured is not None:
        section.append(f"FreeCAD measured:\n{describe_measured(attempt.measured, expected)}")
    return "\n".join(section)


def _clip(feedback: str) -> str:
    """The first line (the error) and the end (the log's tail) of long feedback."""
    if len(feedback) <= FEEDBACK_CHARS:
        return feedback
    first = feedback.splitlines()[0][:500]
    return f"{first}\n[...]\n{feedback[-(FEEDBACK_CHARS - len(first)) :]}"


def _fence_safe(script: str) -> str:
    # a ``` inside a script would end the fence early in the model's reading
    return script.rstrip().replace("```", "` ` `")


def _mm(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


# --- the script in an answer --------------------------------------------------------------


class NoScript(ValueError):
    """The answer holds no Python script: no ```python block and not plain code."""


_THINKING = re.compile(r"<think(?:ing)?>.*?</think(?:ing)?>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(
    r"^[ \t]*```[ \t]*(?P<lang>[A-Za-z0-9_+-]*)[^\n]*\n(?P<code>.*?)^[ \t]*```[ \t]*$",
    re.DOTALL | re.MULTILINE,
)
_PYTHON_TAGS = {"python", "py", "python3"}


def extract_script(answer: str) -> str:
    """The script of an answer: the longest ```python block; else the longest untagged block
    that is Python with an import; else the whole answer when it is such code. Reasoning
    models' <think> sections are skipped. Raises NoScript otherwise."""
    text = _THINKING.sub("", answer).strip()
    blocks = [(m.group("lang").lower(), m.group("code")) for m in _FENCE.finditer(text)]
    tagged = [code for lang, code in blocks if lang in _PYTHON_TAGS]
    if tagged:
        return _tidy(max(tagged, key=len))
    plain = [code for lang, code in blocks if not lang and _is_script(code)]
    if plain:
        return _tidy(max(plain, key=len))
    if not blocks and _is_script(text):
        return _tidy(text)
    raise NoScript("the answer has no ```python code block")


def _is_script(code: str) -> bool:
    """Python that compiles and imports something: prose ("Sorry.") may parse as Python too."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(node, ast.Import | ast.ImportFrom) for node in ast.walk(tree))


def _tidy(code: str) -> str:
    return code.strip("\n").rstrip() + "\n"
