"""A solid block, or a cube."""

from __future__ import annotations

from typing import ClassVar

from services.generator.ports import Expected
from services.generator.templates.parts.base import Code, Given, Part
from services.generator.templates.prompt import Reading


class Box(Part):
    kind = "box"
    names = ("box", "cube", "cuboid", "block", "brick")
    description = "a solid rectangular block, length x width x height"
    example = "a 40 x 30 x 10 mm box"
    parameters = ("length", "width", "height")
    labels: ClassVar[dict[str, tuple[str, float]]] = {
        "length": ("length", 1),
        "long": ("length", 1),
        "width": ("width", 1),
        "wide": ("width", 1),
        "height": ("height", 1),
        "tall": ("height", 1),
        "side": ("side", 1),
    }
    group = ("length", "width", "height")
    required = ("length", "width", "height")

    def read(self, reading: Reading, *, editing: bool) -> Given:
        given = super().read(reading, editing=editing)
        side = given.values.pop("side", None)
        if side is not None:
            for name in self.parameters:
                given.put(name, side, given.sources["side"])
        return given

    def read_loose(self, reading: Reading, given: Given) -> None:
        """ "a 20 mm cube": one number is the side of a cube."""
        is_cube = any(word == "cube" for _, word in reading.parts)
        if is_cube and len(reading.loose) == 1 and not reading.groups:
            given.put("side", reading.loose[0].mm, reading.loose[0].text)
            return
        super().read_loose(reading, given)

    def expected(self, p: dict[str, float]) -> Expected:
        return Expected(
            bbox_mm=(p["length"], p["width"], p["height"]),
            volume_mm3=p["length"] * p["width"] * p["height"],
            solids=1,
        )

    def code(self, p: dict[str, float]) -> Code:
        return Code({}, ["shape = Part.makeBox(LENGTH, WIDTH, HEIGHT)"])

    def describe(self, p: dict[str, float]) -> str:
        return f"a box {p['length']:g} x {p['width']:g} x {p['height']:g} mm"
