"""An L-shaped angle bracket."""

from __future__ import annotations

from typing import ClassVar

from services.generator.ports import Expected
from services.generator.templates.parts.base import MIN_WALL_MM, Code, Part, fits, mm


class LBracket(Part):
    kind = "l_bracket"
    names = ("l-bracket", "l bracket", "bracket", "angle bracket", "corner bracket")
    description = (
        "an L-shaped angle bracket: base leg length x upright leg height x width, thickness"
    )
    example = "L-bracket 50x40x30, 5 mm thick"
    parameters = ("length", "height", "width", "thickness")
    labels: ClassVar[dict[str, tuple[str, float]]] = {
        "length": ("length", 1),
        "long": ("length", 1),
        "height": ("height", 1),
        "tall": ("height", 1),
        "width": ("width", 1),
        "wide": ("width", 1),
        "thickness": ("thickness", 1),
        "thick": ("thickness", 1),
    }
    group = ("length", "height", "width")
    required = ("length", "height", "width", "thickness")

    def check(self, p: dict[str, float]) -> None:
        t = p["thickness"]
        fits(
            t <= min(p["length"], p["height"]) - MIN_WALL_MM,
            f"a bracket {mm(t)} thick needs legs longer than {mm(t)}",
        )

    def expected(self, p: dict[str, float]) -> Expected:
        a, b, w, t = p["length"], p["height"], p["width"], p["thickness"]
        return Expected(bbox_mm=(a, w, b), volume_mm3=t * w * (a + b - t), solids=1)

    def code(self, p: dict[str, float]) -> Code:
        return Code(
            {},
            [
                "base_leg = Part.makeBox(LENGTH, WIDTH, THICKNESS)",
                "upright_leg = Part.makeBox(THICKNESS, WIDTH, HEIGHT)",
                "shape = base_leg.fuse(upright_leg).removeSplitter()",
            ],
        )

    def describe(self, p: dict[str, float]) -> str:
        return (
            f"an L-bracket, base leg {mm(p['length'])} long, upright leg {mm(p['height'])} high, "
            f"{mm(p['width'])} wide, {mm(p['thickness'])} thick"
        )
