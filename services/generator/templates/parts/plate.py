"""A flat plate with through holes in rows near its edges."""

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


class Plate(Part):
    kind = "plate"
    names = ("plate", "base plate", "baseplate", "mounting plate")
    description = "a flat plate, length x width x thickness, with through holes near its edges"
    example = "plate 100 by 60 by 5 mm with 4 holes of 6 mm"
    parameters = ("length", "width", "thickness", "holes", "hole_diameter", "hole_inset")
    labels: ClassVar[dict[str, tuple[str, float]]] = {
        "length": ("length", 1),
        "long": ("length", 1),
        "width": ("width", 1),
        "wide": ("width", 1),
        "thickness": ("thickness", 1),
        "thick": ("thickness", 1),
        "inset": ("hole_inset", 1),
        "from_edge": ("hole_inset", 1),
    }
    group = ("length", "width", "thickness")
    required = ("length", "width", "thickness")
    derived = frozenset({"hole_inset"})
    hole_count = True
    hole_size = "hole_diameter"

    def complete(self, values: dict[str, float]) -> dict[str, tuple[float, str]]:
        if not values.get("holes"):
            return {"holes": (0, "none asked for"), "hole_diameter": (0, ""), "hole_inset": (0, "")}
        if "hole_diameter" not in values:
            raise Refused(
                "say the size of the holes: 'with 4 holes of 6 mm' or 'with four M5 holes'"
            )
        d = values["hole_diameter"]
        return {"hole_inset": (round(1.5 * d, 6), "1.5 x the hole diameter, centre to edge")}

    def finish(self, given: Given, base: dict[str, float]) -> Finished:
        params, defaulted = super().finish(given, base)
        if not params["holes"]:
            params["hole_diameter"] = params["hole_inset"] = 0.0
            defaulted = {k: v for k, v in defaulted.items() if not k.startswith("hole")}
        return params, defaulted

    def hole_positions(self, p: dict[str, float]) -> list[tuple[float, float]]:
        """One hole: the centre. Odd: one row on the centre line along the longer side. Even:
        two rows along the longer edges (two holes: the centre line), inset from the edges."""
        n, e = int(p["holes"]), p["hole_inset"]
        length, width = p["length"], p["width"]
        along_x = length >= width
        long_side, short_side = (length, width) if along_x else (width, length)
        if n == 0:
            return []
        if n == 1:
            spots = [(long_side / 2, short_side / 2)]
        elif n % 2 == 1 or n == 2:
            spots = [(a, short_side / 2) for a in _spread(e, long_side - e, n)]
        else:
            row = _spread(e, long_side - e, n // 2)
            spots = [(a, e) for a in row] + [(a, short_side - e) for a in row]
        spots = [(round(a, 6), round(b, 6)) for a, b in spots]
        return spots if along_x else [(b, a) for a, b in spots]

    def check(self, p: dict[str, float]) -> None:
        n, d, e = int(p["holes"]), p["hole_diameter"], p["hole_inset"]
        if n == 0:
            return
        length, width = p["length"], p["width"]
        long_side, short_side = max(length, width), min(length, width)
        holes = f"{n} holes of {mm(d)}"
        fits(
            d <= short_side - 2 * MIN_WALL_MM,
            f"holes of {mm(d)} do not fit in a plate {mm(short_side)} wide",
        )
        if n == 1:
            return
        fits(
            e - d / 2 >= MIN_WALL_MM,
            f"{holes} {mm(e)} from the edges would break through the edge "
            f"(the inset must be at least {mm(d / 2 + MIN_WALL_MM)})",
        )
        in_row = n // 2 if n % 2 == 0 and n > 2 else n
        pitch = (long_side - 2 * e) / (in_row - 1)
        fits(
            pitch >= d + MIN_WALL_MM,
            f"{holes} do not fit along a {mm(long_side)} side with an inset of {mm(e)}: "
            f"they would be {mm(round(pitch, 3))} apart",
        )
        if n % 2 == 0 and n > 2:
            fits(
                short_side - 2 * e >= d + MIN_WALL_MM,
                f"{holes} in two rows {mm(e)} from the edges do not fit in a plate "
                f"{mm(short_side)} wide",
            )

    def expected(self, p: dict[str, float]) -> Expected:
        hole = math.pi * (p["hole_diameter"] / 2) ** 2 * p["thickness"]
        return Expected(
            bbox_mm=(p["length"], p["width"], p["thickness"]),
            volume_mm3=p["length"] * p["width"] * p["thickness"] - p["holes"] * hole,
            solids=1,
        )

    def code(self, p: dict[str, float]) -> Code:
        return Code(
            {"HOLE_CENTRES": points_literal(self.hole_positions(p))},
            [
                "shape = Part.makeBox(LENGTH, WIDTH, THICKNESS)",
                "for x, y in HOLE_CENTRES:",
                "    # 1 mm past both faces, so that the cut never leaves a coplanar skin",
                "    hole = Part.makeCylinder(HOLE_DIAMETER / 2, THICKNESS + 2, V(x, y, -1))",
                "    shape = shape.cut(hole)",
            ],
        )

    def describe(self, p: dict[str, float]) -> str:
        text = f"a plate {p['length']:g} x {p['width']:g} x {p['thickness']:g} mm"
        if p["holes"]:
            text += (
                f" with {p['holes']:g} through holes of {mm(p['hole_diameter'])}, "
                f"{mm(p['hole_inset'])} from the edges"
            )
        return text


def _spread(start: float, end: float, n: int) -> list[float]:
    if n == 1:
        return [(start + end) / 2]
    return [start + (end - start) * i / (n - 1) for i in range(n)]
