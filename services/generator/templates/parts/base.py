"""What every part of the catalogue shares: how a prompt's reading becomes parameters (groups,
labels, holes, threads, flags), defaults, the range checks, and the shape of the FreeCAD code a
part renders.

Every part sits in the positive octant with a corner of its bounding box at the origin, so its
bounding box is (0, 0, 0)-(x, y, z). Lengths are millimetres; counts and flags are whole numbers.
"""

from __future__ import annotations

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


def points_literal(points: list[tuple[float, float]]) -> str:
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


def fits(condition: bool, message: str) -> None:
    if not condition:
        raise Refused(message)
