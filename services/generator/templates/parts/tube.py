"""A round tube: outer and inner diameter (or wall), length."""

from __future__ import annotations

import math
from typing import ClassVar

from services.generator.ports import Expected
from services.generator.templates.parts.base import (
    MIN_WALL_MM,
    Code,
    Finished,
    Given,
    Part,
    Refused,
    fits,
    mm,
)


class Tube(Part):
    kind = "tube"
    names = ("tube", "pipe", "sleeve", "bushing", "bush", "hollow cylinder", "ring")
    description = "a round tube standing on its end, outer and inner diameter (or wall) x length"
    example = "tube OD 30 ID 24 length 50"
    parameters = ("outer_diameter", "inner_diameter", "length")
    labels: ClassVar[dict[str, tuple[str, float]]] = {
        "outer_diameter": ("outer_diameter", 1),
        "diameter": ("outer_diameter", 1),
        "inner_diameter": ("inner_diameter", 1),
        "bore": ("inner_diameter", 1),
        "wall": ("wall", 1),
        "length": ("length", 1),
        "long": ("length", 1),
        "height": ("length", 1),
        "tall": ("length", 1),
    }
    required = ("outer_diameter", "inner_diameter", "length")

    def finish(self, given: Given, base: dict[str, float]) -> Finished:
        wall = given.values.pop("wall", None)
        if wall is not None:
            outer = given.values.get("outer_diameter", base.get("outer_diameter"))
            if outer is None:
                raise Refused("a tube's wall needs its outer diameter: 'tube OD 30 wall 3 ...'")
            inner = round(outer - 2 * wall, 6)
            fits(inner > 0, f"a wall of {mm(wall)} fills a tube of outer diameter {mm(outer)}")
            given.put("inner_diameter", inner, f"wall {mm(wall)}")
        return super().finish(given, base)

    def check(self, p: dict[str, float]) -> None:
        outer, inner = p["outer_diameter"], p["inner_diameter"]
        fits(
            (outer - inner) / 2 >= MIN_WALL_MM,
            f"a tube needs its inner diameter ({mm(inner)}) below its outer diameter "
            f"({mm(outer)}) with a wall of at least {mm(MIN_WALL_MM)}",
        )

    def expected(self, p: dict[str, float]) -> Expected:
        outer, inner, length = p["outer_diameter"], p["inner_diameter"], p["length"]
        return Expected(
            bbox_mm=(outer, outer, length),
            volume_mm3=math.pi / 4 * (outer**2 - inner**2) * length,
            solids=1,
        )

    def code(self, p: dict[str, float]) -> Code:
        return Code(
            {},
            [
                "r = OUTER_DIAMETER / 2",
                "shape = Part.makeCylinder(r, LENGTH, V(r, r, 0))",
                "shape = shape.cut(Part.makeCylinder(INNER_DIAMETER / 2, LENGTH + 2, V(r, r, -1)))",
            ],
        )

    def describe(self, p: dict[str, float]) -> str:
        return (
            f"a tube of outer diameter {mm(p['outer_diameter'])}, inner diameter "
            f"{mm(p['inner_diameter'])}, {mm(p['length'])} long"
        )
