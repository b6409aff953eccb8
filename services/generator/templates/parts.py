"""The catalogue of parts: for each, the words that name it, its parameters and how a prompt sets
them, defaults, the checks that refuse an impossible part, the analytic volume and bounding box,
and the FreeCAD code that builds it.

Every part sits in the positive octant with a corner of its bounding box at the origin, so its
bounding box is (0, 0, 0)-(x, y, z). Lengths are millimetres; counts and flags are whole numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from services.generator.ports import Expected
from services.generator.templates import units
from services.generator.templates.prompt import HolePhrase, Reading, Thread

MIN_WALL_MM = 0.5
"""The thinnest material left anywhere (between holes, around a bore, at an edge)."""
MIN_SIZE_MM = 0.1
MAX_SIZE_MM = 10_000.0
MAX_HOLES = 64
HOLE_PATTERN = frozenset({"hole_diameter", "hole_inset", "bolt_circle"})


Finished = tuple[dict[str, float], dict[str, str]]
"""A part's parameters, and those the prompt did not give with why they have their value."""


class Refused(ValueError):
    """The part cannot be made as asked; the message says why, for a person."""


@dataclass
class Given:
    """What one prompt sets on a part."""

    values: dict[str, float] = field(default_factory=dict)
    added_holes: int = 0
    defaulted: dict[str, str] = field(default_factory=dict)
    """Parameter -> why it has the value it has although the prompt did not say it."""
    sources: dict[str, str] = field(default_factory=dict)

    def put(self, name: str, value: float, text: str) -> None:
        if name in self.values and abs(self.values[name] - value) > 1e-9:
            raise Refused(f"{name.replace('_', ' ')} is given twice: {self.sources[name]}, {text}")
        self.values[name] = value
        self.sources[name] = text


@dataclass(frozen=True)
class Code:
    """FreeCAD code that leaves the part in `shape`, and the constants it reads."""

    constants: dict[str, str]
    lines: list[str]


def mm(value: float) -> str:
    return f"{value:g} mm"


def literal(value: float) -> str:
    return repr(float(value))


def _points(points: list[tuple[float, float]]) -> str:
    return "[" + ", ".join(f"({literal(x)}, {literal(y)})" for x, y in points) + "]"


class Part:
    kind: ClassVar[str]
    names: ClassVar[tuple[str, ...]]
    """Phrases that name the part in a prompt."""
    description: ClassVar[str]
    example: ClassVar[str]
    parameters: ClassVar[tuple[str, ...]]
    labels: ClassVar[dict[str, tuple[str, float]]]
    """Canonical prompt label (prompt.LABELS) -> (parameter, factor)."""
    group: ClassVar[tuple[str, ...]] = ()
    """The parameters an "A x B x C" group sets, in order."""
    required: ClassVar[tuple[str, ...]]
    derived: ClassVar[frozenset[str]] = frozenset()
    """Parameters whose default follows from others: re-derived on an edit when defaulted."""
    counts: ClassVar[frozenset[str]] = frozenset({"holes", "lid", "hex"})
    hole_count: ClassVar[bool] = False
    hole_size: ClassVar[str | None] = None
    flags: ClassVar[dict[str, tuple[str, float]]] = {}
    label_flags: ClassVar[dict[str, tuple[str, float]]] = {}
    """Labels that also say something of the shape ("6 mm across": hexagonal)."""

    # --- reading ---------------------------------------------------------------------------

    def vocabulary(self) -> str:
        words = []
        if self.group:
            words.append(" x ".join(self.group))
        words.extend(sorted({label.replace("_", " ") for label in self.labels}))
        return ", ".join(words)

    def read(self, reading: Reading, *, editing: bool) -> Given:
        given = Given()
        if len(reading.groups) > 1:
            raise Refused("the prompt gives two sets of 'A x B' dimensions; give one")
        for group in reading.groups:
            if not self.group:
                raise Refused(
                    f"a {self.kind} is not sized 'A x B x C': name its sizes ({self.vocabulary()})"
                )
            if len(group) > len(self.group):
                raise Refused(
                    f"a {self.kind} is sized {' x '.join(self.group)}; the prompt gives "
                    f"{len(group)} numbers ({' x '.join(m.text for m in group)})"
                )
            for name, length in zip(self.group, group, strict=False):
                given.put(name, length.mm, length.text)
        for item in reading.labelled:
            target = self.labels.get(item.label)
            if target is None:
                raise Refused(f"a {self.kind} has no '{item.word}'; it takes {self.vocabulary()}")
            name, factor = target
            if isinstance(item.value, Thread):
                if name != self.hole_size:
                    raise Refused(f"'{item.word} {item.value.text}': a thread size names a hole")
                self.hole_from_thread(item.value, given)
            else:
                given.put(name, round(item.value.mm * factor, 6), f"{item.word} {item.value.text}")
            if item.label in self.label_flags:
                flag, value = self.label_flags[item.label]
                given.put(flag, value, item.word)
        for label, word in reading.dangling:
            if label not in self.labels:
                raise Refused(f"a {self.kind} has no '{word}'; it takes {self.vocabulary()}")
        for phrase in reading.holes:
            self.read_holes(phrase, given, editing=editing)
        for thread in reading.loose_threads:
            self.loose_thread(thread, given)
        self.read_loose(reading, given)
        for flag in sorted(reading.flags):
            self.read_flag(flag, given)
        return given

    def read_holes(self, phrase: HolePhrase, given: Given, *, editing: bool) -> None:
        if not (self.hole_count or self.hole_size):
            raise Refused(
                f"a {self.kind} has no holes; templates make holes in a plate or a flange "
                "(and a standoff's bore)"
            )
        if phrase.count is not None:
            if not self.hole_count:
                if phrase.count != 1:
                    raise Refused(f"a {self.kind} has one bore, not {phrase.count} holes")
            elif phrase.added:
                given.added_holes += phrase.count
            else:
                given.put("holes", phrase.count, f"{phrase.count} holes")
        elif self.hole_count and not editing and "holes" not in given.values:
            count = 4 if phrase.plural else 1
            given.put("holes", count, "holes")
            given.defaulted["holes"] = "the prompt asks for holes without saying how many"
        if phrase.size is not None and self.hole_size:
            if isinstance(phrase.size, Thread):
                self.hole_from_thread(phrase.size, given)
            else:
                given.put(self.hole_size, phrase.size.mm, f"holes of {phrase.size.text}")

    def hole_from_thread(self, thread: Thread, given: Given) -> None:
        """A clearance hole for the bolt (ISO 273, medium)."""
        clearance = units.CLEARANCE_HOLE_MM.get(thread.size)
        if clearance is None or self.hole_size is None:
            raise Refused(
                f"no clearance hole is known for {thread.text}; known sizes: "
                f"{units.sizes(units.CLEARANCE_HOLE_MM)}"
            )
        given.put(self.hole_size, clearance, f"{thread.text} clearance ({mm(clearance)})")

    def loose_thread(self, thread: Thread, given: Given) -> None:
        del given
        raise Refused(
            f"could not tell what {thread.text} is in a {self.kind}: say '{thread.text} holes'"
        )

    def read_loose(self, reading: Reading, given: Given) -> None:
        del given
        if reading.loose:
            raise Refused(
                f"could not tell what {reading.loose[0].text} is in a {self.kind}: name it "
                f"({self.vocabulary()})"
            )

    def read_flag(self, flag: str, given: Given) -> None:
        if flag == "no_holes" and self.hole_count:
            given.put("holes", 0, "no holes")
        elif flag in self.flags:
            name, value = self.flags[flag]
            given.put(name, value, flag.replace("_", " "))
        elif flag == "round" and self.kind in ("cylinder", "tube", "flange"):
            pass  # round already
        else:
            raise Refused(f"'{flag.replace('_', ' ')}' does not apply to a {self.kind}")

    # --- completing and checking ------------------------------------------------------------

    def complete(self, values: dict[str, float]) -> dict[str, tuple[float, str]]:
        """Defaults for what is missing: parameter -> (value, why)."""
        del values
        return {}

    def edit_base(
        self, parameters: dict[str, float], defaulted: frozenset[str]
    ) -> dict[str, float]:
        """What an edit starts from: the parent's parameters, less the defaults that follow from
        other sizes (worked out again), and less the hole pattern of a part that had no holes."""
        base = {
            name: value
            for name, value in parameters.items()
            if not (name in defaulted and name in self.derived)
        }
        if self.hole_count and not base.get("holes"):
            base = {name: value for name, value in base.items() if name not in HOLE_PATTERN}
        return base

    def finish(self, given: Given, base: dict[str, float]) -> Finished:
        """The part's parameters: base (a parent's), then what the prompt gives, then defaults.
        Returns them and the parameters that were defaulted, with why."""
        values = {**base, **given.values}
        if given.added_holes:
            values["holes"] = values.get("holes", 0) + given.added_holes
        defaulted = dict(given.defaulted)
        for name, (value, why) in self.complete(values).items():
            if name not in values:
                values[name] = value
                defaulted[name] = why
        missing = [name for name in self.required if name not in values]
        if missing:
            raise Refused(
                f"a {self.kind} needs its {', '.join(n.replace('_', ' ') for n in missing)}; "
                f"for example: '{self.example}'"
            )
        params = {name: values[name] for name in self.parameters if name in values}
        self.check_sizes(params)
        self.check(params)
        return params, defaulted

    def check_sizes(self, p: dict[str, float]) -> None:
        for name, value in p.items():
            if name in self.counts:
                if value < 0 and name == "holes":
                    raise Refused(f"the part has fewer holes than the prompt removes ({value:g})")
                if value < 0 or value != int(value):
                    raise Refused(f"{name} must be a whole number, not {value:g}")
                continue
            if name == "thread" or (value == 0 and name in HOLE_PATTERN and not p.get("holes")):
                continue
            if not MIN_SIZE_MM <= value <= MAX_SIZE_MM:
                raise Refused(
                    f"{name.replace('_', ' ')} {mm(value)} is outside what templates make "
                    f"({mm(MIN_SIZE_MM)} to {mm(MAX_SIZE_MM)})"
                )
        if p.get("holes", 0) > MAX_HOLES:
            raise Refused(f"{p['holes']:g} holes: templates make at most {MAX_HOLES}")

    def check(self, p: dict[str, float]) -> None:
        del p

    # --- geometry --------------------------------------------------------------------------

    def expected(self, p: dict[str, float]) -> Expected:
        raise NotImplementedError

    def code(self, p: dict[str, float]) -> Code:
        raise NotImplementedError

    def describe(self, p: dict[str, float]) -> str:
        raise NotImplementedError


def _fits(condition: bool, message: str) -> None:
    if not condition:
        raise Refused(message)


# --- the parts -----------------------------------------------------------------------------


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
        _fits(
            d <= short_side - 2 * MIN_WALL_MM,
            f"holes of {mm(d)} do not fit in a plate {mm(short_side)} wide",
        )
        if n == 1:
            return
        _fits(
            e - d / 2 >= MIN_WALL_MM,
            f"{holes} {mm(e)} from the edges would break through the edge "
            f"(the inset must be at least {mm(d / 2 + MIN_WALL_MM)})",
        )
        in_row = n // 2 if n % 2 == 0 and n > 2 else n
        pitch = (long_side - 2 * e) / (in_row - 1)
        _fits(
            pitch >= d + MIN_WALL_MM,
            f"{holes} do not fit along a {mm(long_side)} side with an inset of {mm(e)}: "
            f"they would be {mm(round(pitch, 3))} apart",
        )
        if n % 2 == 0 and n > 2:
            _fits(
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
            {"HOLE_CENTRES": _points(self.hole_positions(p))},
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
            _fits(inner > 0, f"a wall of {mm(wall)} fills a tube of outer diameter {mm(outer)}")
            given.put("inner_diameter", inner, f"wall {mm(wall)}")
        return super().finish(given, base)

    def check(self, p: dict[str, float]) -> None:
        outer, inner = p["outer_diameter"], p["inner_diameter"]
        _fits(
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
        _fits(
            bore <= outer - 2 * MIN_WALL_MM,
            f"the bore ({mm(bore)}) must be smaller than the flange ({mm(outer)})",
        )
        n, d, circle = int(p["holes"]), p["hole_diameter"], p["bolt_circle"]
        if n == 0:
            return
        _fits(
            circle / 2 - d / 2 - bore / 2 >= MIN_WALL_MM,
            f"holes of {mm(d)} on a {mm(circle)} circle would break into the {mm(bore)} bore",
        )
        _fits(
            outer / 2 - circle / 2 - d / 2 >= MIN_WALL_MM,
            f"holes of {mm(d)} on a {mm(circle)} circle would break through the rim of a "
            f"{mm(outer)} flange",
        )
        if n > 1:
            gap = circle * math.sin(math.pi / n) - d
            _fits(
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
            {"HOLE_CENTRES": _points(self.hole_positions(p))},
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
        _fits(
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
        _fits(
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
        _fits(
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
