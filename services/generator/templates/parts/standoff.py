"""A hexagonal or round standoff with a tapped bore."""

from __future__ import annotations

import math
from typing import ClassVar

from services.generator.ports import Expected
from services.generator.templates import units
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
from services.generator.templates.prompt import Thread


class Standoff(Part):
    kind = "standoff"
    names = ("standoff", "stand-off", "spacer", "pcb standoff")
    description = "a hexagonal (or round) standoff with a bore tapped for its thread"
    example = "standoff M3, 10 mm long, 6 mm across"
    parameters = ("length", "thread", "hole_diameter", "body_width", "hex")
    labels: ClassVar[dict[str, tuple[str, float]]] = {
        "length": ("length", 1),
        "long": ("length", 1),
        "height": ("length", 1),
        "tall": ("length", 1),
        "across": ("body_width", 1),
        "diameter": ("body_width", 1),
        "outer_diameter": ("body_width", 1),
        "bore": ("hole_diameter", 1),
        "inner_diameter": ("hole_diameter", 1),
    }
    label_flags: ClassVar[dict[str, tuple[str, float]]] = {
        "across": ("hex", 1),
        "diameter": ("hex", 0),
        "outer_diameter": ("hex", 0),
    }
    flags: ClassVar[dict[str, tuple[str, float]]] = {"hex": ("hex", 1), "round": ("hex", 0)}
    required = ("length", "hole_diameter", "body_width")
    derived = frozenset({"hole_diameter", "body_width"})
    hole_size = "hole_diameter"

    def hole_from_thread(self, thread: Thread, given: Given) -> None:
        self.loose_thread(thread, given)

    def loose_thread(self, thread: Thread, given: Given) -> None:
        if thread.size not in units.TAP_DRILL_MM:
            raise Refused(
                f"no tap drill is known for {thread.text}; known sizes: "
                f"{units.sizes(units.TAP_DRILL_MM)}"
            )
        given.put("thread", thread.size, thread.text)

    def complete(self, values: dict[str, float]) -> dict[str, tuple[float, str]]:
        defaults: dict[str, tuple[float, str]] = {}
        if "hex" not in values:
            defaults["hex"] = (1, "hexagonal, as standoffs usually are")
        thread = values.get("thread", 0)
        if thread:
            name = units.thread_name(thread)
            defaults["hole_diameter"] = (units.TAP_DRILL_MM[thread], f"the tap drill of {name}")
            defaults["body_width"] = (
                units.HEX_ACROSS_FLATS_MM[thread],
                f"across flats of an {name} nut, ISO 4032",
            )
        else:
            defaults["thread"] = (0, "no thread named: a plain bore")
            if "hole_diameter" not in values:
                raise Refused("say the standoff's thread ('standoff M3 ...') or its bore")
        return defaults

    def finish(self, given: Given, base: dict[str, float]) -> Finished:
        if "thread" in given.values and "hole_diameter" not in given.values:
            base = {k: v for k, v in base.items() if k != "hole_diameter"}
        return super().finish(given, base)

    def check(self, p: dict[str, float]) -> None:
        fits(
            p["hole_diameter"] <= p["body_width"] - 2 * MIN_WALL_MM,
            f"a bore of {mm(p['hole_diameter'])} does not fit in a standoff "
            f"{mm(p['body_width'])} across",
        )

    def expected(self, p: dict[str, float]) -> Expected:
        s, h, length = p["body_width"], p["hole_diameter"], p["length"]
        bore = math.pi / 4 * h**2 * length
        if p["hex"]:
            return Expected(
                bbox_mm=(2 * s / math.sqrt(3), s, length),
                volume_mm3=math.sqrt(3) / 2 * s**2 * length - bore,
                solids=1,
            )
        return Expected(
            bbox_mm=(s, s, length), volume_mm3=math.pi / 4 * s**2 * length - bore, solids=1
        )

    def code(self, p: dict[str, float]) -> Code:
        if p["hex"]:
            body = [
                "# a regular hexagon, flats parallel to X, corners on the X axis",
                "corner = BODY_WIDTH / math.sqrt(3)",
                "centre = V(corner, BODY_WIDTH / 2, 0)",
                "outline = [",
                "    centre + V(corner * math.cos(math.radians(60 * i)),",
                "               corner * math.sin(math.radians(60 * i)), 0)",
                "    for i in range(7)",
                "]",
                "shape = Part.Face(Part.makePolygon(outline)).extrude(V(0, 0, LENGTH))",
            ]
        else:
            body = [
                "centre = V(BODY_WIDTH / 2, BODY_WIDTH / 2, 0)",
                "shape = Part.makeCylinder(BODY_WIDTH / 2, LENGTH, centre)",
            ]
        return Code(
            {},
            [
                *body,
                "# the bore: the tap drill of the thread (the thread itself is not modelled)",
                "bore = Part.makeCylinder(HOLE_DIAMETER / 2, LENGTH + 2, centre + V(0, 0, -1))",
                "shape = shape.cut(bore)",
            ],
        )

    def describe(self, p: dict[str, float]) -> str:
        shape = "hexagonal" if p["hex"] else "round"
        across = "across flats" if p["hex"] else "in diameter"
        thread = f"{units.thread_name(p['thread'])} " if p["thread"] else ""
        return (
            f"a {shape} {thread}standoff {mm(p['length'])} long, {mm(p['body_width'])} {across}, "
            f"bore {mm(p['hole_diameter'])}"
        )
