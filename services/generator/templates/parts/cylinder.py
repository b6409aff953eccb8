"""A solid cylinder."""

from __future__ import annotations

import math
from typing import ClassVar

from services.generator.ports import Expected
from services.generator.templates.parts.base import Code, Part, mm


class Cylinder(Part):
    kind = "cylinder"
    names = ("cylinder", "rod", "disc", "disk", "puck", "shaft", "round bar")
    description = "a solid cylinder standing on its base, diameter x height"
    example = "cylinder diameter 20 mm height 30"
    parameters = ("diameter", "height")
    labels: ClassVar[dict[str, tuple[str, float]]] = {
        "diameter": ("diameter", 1),
        "outer_diameter": ("diameter", 1),
        "radius": ("diameter", 2),
        "height": ("height", 1),
        "tall": ("height", 1),
        "length": ("height", 1),
        "long": ("height", 1),
        "thickness": ("height", 1),
        "thick": ("height", 1),
    }
    required = ("diameter", "height")

    def expected(self, p: dict[str, float]) -> Expected:
        d, h = p["diameter"], p["height"]
        return Expected(bbox_mm=(d, d, h), volume_mm3=math.pi * (d / 2) ** 2 * h, solids=1)

    def code(self, p: dict[str, float]) -> Code:
        return Code(
            {},
            ["r = DIAMETER / 2", "shape = Part.makeCylinder(r, HEIGHT, V(r, r, 0))"],
        )

    def describe(self, p: dict[str, float]) -> str:
        return f"a cylinder of diameter {mm(p['diameter'])}, {mm(p['height'])} high"
