"""A hollow box, open at the top or with a lid."""

from __future__ import annotations

from typing import ClassVar

from services.generator.ports import Expected
from services.generator.templates.parts.base import MIN_WALL_MM, Code, Part, fits, mm


class Enclosure(Part):
    kind = "enclosure"
    names = ("enclosure", "project box", "electronics box", "housing", "open box")
    description = "a hollow box, open at the top or with a separate lid, outer size and wall"
    example = "enclosure 80x60x40 wall 2 mm"
    parameters = ("length", "width", "height", "wall", "lid")
    labels: ClassVar[dict[str, tuple[str, float]]] = {
        "length": ("length", 1),
        "long": ("length", 1),
        "width": ("width", 1),
        "wide": ("width", 1),
        "height": ("height", 1),
        "tall": ("height", 1),
        "depth": ("height", 1),
        "deep": ("height", 1),
        "wall": ("wall", 1),
        "thickness": ("wall", 1),
        "thick": ("wall", 1),
    }
    flags: ClassVar[dict[str, tuple[str, float]]] = {"lid": ("lid", 1), "no_lid": ("lid", 0)}
    group = ("length", "width", "height")
    required = ("length", "width", "height", "wall")

    def complete(self, values: dict[str, float]) -> dict[str, tuple[float, str]]:
        return {"wall": (2.0, "a common wall"), "lid": (0, "open top")}

    def check(self, p: dict[str, float]) -> None:
        wall = p["wall"]
        floors = 2 if p["lid"] else 1
        fits(
            2 * wall <= min(p["length"], p["width"]) - MIN_WALL_MM
            and floors * wall <= p["height"] - MIN_WALL_MM,
            f"a wall of {mm(wall)} leaves no room inside a "
            f"{p['length']:g} x {p['width']:g} x {p['height']:g} mm enclosure "
            "(it must be thinner than half the enclosure)",
        )

    def expected(self, p: dict[str, float]) -> Expected:
        length, width, height, wall = p["length"], p["width"], p["height"], p["wall"]
        floors = 2 if p["lid"] else 1
        inside = (length - 2 * wall) * (width - 2 * wall) * (height - floors * wall)
        return Expected(
            bbox_mm=(length, width, height),
            volume_mm3=length * width * height - inside,
            solids=2 if p["lid"] else 1,
        )

    def code(self, p: dict[str, float]) -> Code:
        if not p["lid"]:
            return Code(
                {},
                [
                    "shape = Part.makeBox(LENGTH, WIDTH, HEIGHT)",
                    "# the cavity, 1 mm past the open top",
                    "cavity = Part.makeBox(LENGTH - 2 * WALL, WIDTH - 2 * WALL, HEIGHT - WALL + 1,",
                    "                      V(WALL, WALL, WALL))",
                    "shape = shape.cut(cavity)",
                ],
            )
        return Code(
            {},
            [
                "# the box up to the underside of the lid, and the lid resting on it: two solids",
                "box = Part.makeBox(LENGTH, WIDTH, HEIGHT - WALL)",
                "cavity = Part.makeBox(LENGTH - 2 * WALL, WIDTH - 2 * WALL, HEIGHT - 2 * WALL + 1,",
                "                      V(WALL, WALL, WALL))",
                "box = box.cut(cavity)",
                "lid = Part.makeBox(LENGTH, WIDTH, WALL, V(0, 0, HEIGHT - WALL))",
                "shape = Part.makeCompound([box, lid])",
            ],
        )

    def describe(self, p: dict[str, float]) -> str:
        top = "with a separate lid" if p["lid"] else "open at the top"
        return (
            f"an enclosure {p['length']:g} x {p['width']:g} x {p['height']:g} mm outside, "
            f"walls {mm(p['wall'])}, {top}"
        )
