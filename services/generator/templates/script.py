"""The FreeCAD script of a part, and the header that lets a later prompt edit it.

Every script starts with one line

    # cadpipe-template: {"kind": "plate", "parameters": {...}, "defaulted": [...], ...}

whose "code_sha256" covers everything after that line: a script changed by hand is not taken for
one of ours (its parameters would no longer describe it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from services.generator.ports import Expected
from services.generator.templates.parts import Part

HEADER_PREFIX = "# cadpipe-template: "
OUTPUT_BASE_NAME = "MyHeadlessModel"
PROMPT_SHOWN_CHARS = 300


@dataclass(frozen=True)
class Header:
    kind: str
    parameters: dict[str, float]
    defaulted: frozenset[str]


class HeaderError(ValueError):
    """The parent script is not one the templates wrote, as it is now."""


def _constant(name: str, value: float, part: Part) -> str:
    whole = name in part.counts or (name == "thread" and value == 0)
    return f"{name.upper()} = {int(value) if whole else float(value)!r}"


def render(
    part: Part,
    parameters: dict[str, float],
    defaulted: dict[str, str],
    expected: Expected,
    prompt: str,
) -> str:
    code = part.code(parameters)
    shown_prompt = json.dumps(prompt.strip()[:PROMPT_SHOWN_CHARS], ensure_ascii=True)
    assert expected.bbox_mm is not None and expected.volume_mm3 is not None
    x, y, z = expected.bbox_mm
    solids = expected.solids or 1
    lines = [
        "# Written by cadpipe's `templates` provider (a deterministic catalogue of parts, no LLM)",
        f"# for the prompt {shown_prompt}",
        f"# The part: {part.describe(parameters)}.",
    ]
    if defaulted:
        lines.append("# Defaulted (the prompt did not say):")
        lines.extend(
            f"#   {name} = {parameters[name]:g} ({why})" for name, why in sorted(defaulted.items())
        )
    else:
        lines.append("# Defaulted: nothing; every size is the prompt's.")
    lines += [
        f"# Expected: bounding box {x:g} x {y:g} x {z:g} mm, volume {expected.volume_mm3:.3f} mm^3,"
        f" {solids} solid{'s' if solids > 1 else ''}.",
        "# Headless FreeCAD (0.20 and 1.0): writes "
        f"{OUTPUT_BASE_NAME}.FCStd, .step, .iges, .stl and .obj into $FREECAD_OUTPUT.",
        "import math",
        "import os",
        "",
        "import FreeCAD",
        "import Mesh",
        "import Part",
        "",
        "V = FreeCAD.Vector",
        "",
        "# Sizes in millimetres",
        *(_constant(name, value, part) for name, value in parameters.items()),
        *(f"{name} = {value}" for name, value in code.constants.items()),
        "",
        *code.lines,
        "",
        "if shape.isNull() or not shape.isValid():",
        '    raise RuntimeError("the part did not come out as a valid solid")',
        "",
        f'doc = FreeCAD.newDocument("{OUTPUT_BASE_NAME}")',
        f'feature = doc.addObject("Part::Feature", "{part.kind.title().replace("_", "")}")',
        "feature.Shape = shape",
        "doc.recompute()",
        "",
        'out = os.environ.get("FREECAD_OUTPUT") or os.getcwd()',
        f'base = os.path.join(out, "{OUTPUT_BASE_NAME}")',
        'doc.saveAs(base + ".FCStd")',
        'Part.export([feature], base + ".step")',
        'Part.export([feature], base + ".iges")',
        'Mesh.export([feature], base + ".stl")',
        'Mesh.export([feature], base + ".obj")',
        "",
    ]
    body = "\n".join(lines)
    header = {
        "kind": part.kind,
        "parameters": parameters,
        "defaulted": sorted(defaulted),
        "code_sha256": hashlib.sha256(body.encode()).hexdigest(),
    }
    return HEADER_PREFIX + json.dumps(header) + "\n" + body


def read_header(script: str) -> Header | None:
    """The header of a script the templates wrote; None when it has none. HeaderError when it
    has one that does not describe the script (changed by hand, or damaged)."""
    first, _, body = script.lstrip("\ufeff").partition("\n")
    if not first.startswith(HEADER_PREFIX):
        return None
    try:
        header = json.loads(first[len(HEADER_PREFIX) :])
        kind = header["kind"]
        parameters = header["parameters"]
        defaulted = header.get("defaulted", [])
        digest = header["code_sha256"]
    except (ValueError, KeyError, TypeError) as error:
        raise HeaderError(f"its cadpipe-template header cannot be read ({error})") from None
    if (
        not isinstance(kind, str)
        or not isinstance(parameters, dict)
        or not all(isinstance(v, int | float) for v in parameters.values())
        or not isinstance(defaulted, list)
    ):
        raise HeaderError("its cadpipe-template header is malformed")
    if hashlib.sha256(body.encode()).hexdigest() != digest:
        raise HeaderError("it was changed since the templates wrote it")
    return Header(kind, {str(k): float(v) for k, v in parameters.items()}, frozenset(defaulted))
