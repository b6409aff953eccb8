"""A flat round flange: bore and bolt holes on a circle."""

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
    points_literal,
)


class Flange(Part):
    kind = "flange"
    names = ("flange", "flat flange")
    description = "a flat round flange with a central bore and bolt holes on a circle"
    example = (
        "flange outer diameter 120, bore 40, thickness 12, 6 bolt holes of 10 mm on a 90 mm circle"
    )
    parameters = ("outer_diameter", "bore", "thickness", "holes", "hole_diameter", "bolt_circle")
    labels: ClassVar[dict[str, tuple[str, float]]] = {
        "outer_diameter": ("outer_diameter", 1),
        "diameter": ("outer_diameter", 1),
        "bore": ("bore", 1),
        "inner_diameter": ("bore", 1),
        "thickness": ("thickness", 1),
        "thick": ("thickness", 1),
        "circle": ("bolt_circle", 1),
    }
    required = ("outer_diameter", "bore", "thickness")
    derived = frozenset({"bolt_circle"})
    hole_count = True
    hole_size = "hole_diameter"

    def complete(self, values: dict[str, float]) -> dict[str, tuple[float, str]]:
        if "holes" not in values:
            raise Refused(
                "a flange needs its bolt holes: add e.g. '6 bolt holes of 10 mm', "
                "or say 'without holes'"
            )
        if not values["holes"]:
            return {"hole_diameter": (0, ""), "bolt_circle": (0, "")}
        if "hole_diameter" not in values:
            raise Refused(
                "say the size of the bolt holes: '6 bolt holes of 10 mm' or '6 M10 holes'"
            )
        if "outer_diameter" in values and "bore" in values:
            circle = round((values["outer_diameter"] + values["bore"]) / 2, 6)
            return {"bolt_circle": (circle, "midway between the bore and the rim")}
        return {}

    def finish(self, given: Given, base: dict[str, float]) -> Finished:
        params, defaulted = super().finish(given, base)
        if not params["holes"]:
            params["hole_diameter"] = params["bolt_circle"] = 0.0
            defaulted = {k: v for k, v in defaulted.items() if not k.startswith(("hole", "bolt"))}
        return params, defaulted

    def hole_positions(self, p: dict[str, float]) -> list[tuple[float, float]]:
        """Evenly spaced on the bolt circle, straddling the axes (the first at 180/n degrees)."""
        n, r, c = int(p["holes"]), p["bolt_circle"] / 2, p["outer_diameter"] / 2
        return [
            (
                round(c + r * math.cos(math.pi * (2 * i + 1) / n), 6),
                round(c + r * math.sin(math.pi * (2 * i + 1) / n), 6),
            )
            for i in range(n)
        ]

    def check(self, p: dict[str, float]) -> None:
        outer, bore = p["outer_diameter"], p["bore"]
        fits(
            bore <= outer - 2 * MIN_WALL_MM,
            f"the bore ({mm(bore)}) must be smaller than the flange ({mm(outer)})",
        )
        n, d, circle = int(p["holes"]), p["hole_diameter"], p["bolt_circle"]
        if n == 0:
            return
        fits(
            circle / 2 - d / 2 - bore / 2 >= MIN_WALL_MM,
            f"holes of {mm(d)} on a {mm(circle)} circle would break into the {mm(bore)} bore",
        )
        fits(
            outer / 2 - circle / 2 - d / 2 >= MIN_WALL_MM,
            f"holes of {mm(d)} on a {mm(circle)} circle would break through the rim of a "
            f"{mm(outer)} flange",
        )
        if n > 1:
            gap = circle * math.sin(math.pi / n) - d
            fits(
                gap >= MIN_WALL_MM,
                f"{n} holes of {mm(d)} do not fit on a {mm(circle)} circle",
            )

    def expected(self, p: dict[str, float]) -> Expected:
        outer, bore, t = p["outer_diameter"], p["bore"], p["thickness"]
        holes = p["holes"] * math.pi / 4 * p["hole_diameter"] ** 2 * t
        return Expected(
            bbox_mm=(outer, outer, t),
            volume_mm3=math.pi / 4 * (outer**2 - bore**2) * t - holes,
            solids=1,
        )

    def code(self, p: dict[str, float]) -> Code:
        return Code(
            {"HOLE_CENTRES": points_literal(self.hole_positions(p))},
            [
                "r = OUTER_DIAMETER / 2",
                "shape = Part.makeCylinder(r, THICKNESS, V(r, r, 0))",
                "shape = shape.cut(Part.makeCylinder(BORE / 2, THICKNESS + 2, V(r, r, -1)))",
                "for x, y in HOLE_CENTRES:",
                "    shape = shape.cut(Part.makeCylinder(HOLE_DIAMETER / 2, THICKNESS + 2, "
                "V(x, y, -1)))",
            ],
        )

    def describe(self, p: dict[str, float]) -> str:
        text = (
            f"a flange of outer diameter {mm(p['outer_diameter'])}, bore {mm(p['bore'])}, "
            f"{mm(p['thickness'])} thick"
        )
        if p["holes"]:
            text += (
                f", {p['holes']:g} bolt holes of {mm(p['hole_diameter'])} on a "
                f"{mm(p['bolt_circle'])} circle"
            )
        return text
