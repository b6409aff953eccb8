"""The catalogue of parts: for each, the words that name it, its parameters and how a prompt sets
them, defaults, the checks that refuse an impossible part, the analytic volume and bounding box,
and the FreeCAD code that builds it. One module per part; what they share is in base.py.

Every part sits in the positive octant with a corner of its bounding box at the origin, so its
bounding box is (0, 0, 0)-(x, y, z). Lengths are millimetres; counts and flags are whole numbers.
"""

from __future__ import annotations

from services.generator.templates.parts.base import Part, Refused
from services.generator.templates.parts.box import Box
from services.generator.templates.parts.bracket import LBracket
from services.generator.templates.parts.cylinder import Cylinder
from services.generator.templates.parts.enclosure import Enclosure
from services.generator.templates.parts.flange import Flange
from services.generator.templates.parts.plate import Plate
from services.generator.templates.parts.standoff import Standoff
from services.generator.templates.parts.tube import Tube

PARTS: tuple[Part, ...] = (
    Box(),
    Plate(),
    Cylinder(),
    Tube(),
    Flange(),
    LBracket(),
    Standoff(),
    Enclosure(),
)
BY_KIND: dict[str, Part] = {part.kind: part for part in PARTS}
PART_WORDS: dict[str, str] = {name: part.kind for part in PARTS for name in part.names}

SUBSUMES: dict[str, frozenset[str]] = {
    "enclosure": frozenset({"box"}),
    "flange": frozenset({"plate"}),
    "tube": frozenset({"cylinder"}),
    "standoff": frozenset({"cylinder", "tube"}),
    "l_bracket": frozenset({"plate"}),
}
"""A part named with another's word ("enclosure box", "flange plate") is the first."""

__all__ = ["BY_KIND", "PARTS", "PART_WORDS", "SUBSUMES", "Part", "Refused"]
