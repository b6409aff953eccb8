"""Reading a prompt: numbers and their units, dimension groups ("40 x 30 x 10 mm"), labelled sizes
("diameter 20", "5 mm thick"), hole phrases ("4 holes of 6 mm", "four M5 holes"), part names and
flags ("with lid"). It knows nothing of the parts: parts.py maps what is read to parameters.

The reader is strict: a number it cannot attach to anything is reported as loose (the part then
refuses it), never dropped, and units that leave a bare number ambiguous are refused here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from services.generator.templates import units


class PromptError(ValueError):
    """The prompt cannot be read without guessing; the message says why."""


@dataclass(frozen=True)
class Length:
    mm: float
    text: str
    """As written ("10 mm", "1 in", "30"), for messages."""


@dataclass(frozen=True)
class Thread:
    size: float
    """Nominal diameter: M5 is 5.0."""
    text: str


Size = Length | Thread


@dataclass(frozen=True)
class Labelled:
    label: str
    """Canonical label: "diameter", "thickness", "circle", ... (see LABELS)."""
    value: Size
    word: str
    """The label as written."""


@dataclass(frozen=True)
class HolePhrase:
    count: int | None
    added: bool
    """"2 more holes", "add 2 holes": count is added to what the part has ("remove 2 holes",
    "2 fewer holes": a negative count)."""
    size: Size | None
    plural: bool


@dataclass(frozen=True)
class Reading:
    parts: tuple[tuple[str, str], ...] = ()
    """(kind, word as written) for each part name in the prompt."""
    groups: tuple[tuple[Length, ...], ...] = ()
    labelled: tuple[Labelled, ...] = ()
    holes: tuple[HolePhrase, ...] = ()
    loose_threads: tuple[Thread, ...] = ()
    loose: tuple[Length, ...] = ()
    """Numbers that nothing in the prompt names."""
    flags: frozenset[str] = frozenset()
    unsupported: tuple[str, ...] = ()
    """Features the catalogue does not make ("fillet"), as written."""
    relative: tuple[str, ...] = ()
    """Relative sizes ("twice", "thicker", "%"), which the catalogue does not take."""
    dangling: tuple[tuple[str, str], ...] = ()
    """(label, word as written) of labels that found no number ("a thick plate")."""

    def is_empty(self) -> bool:
        return not (self.groups or self.labelled or self.holes or self.loose_threads or self.flags)


# canonical label -> (phrases, may precede its number, may follow its number)
LABELS: dict[str, tuple[tuple[str, ...], bool, bool]] = {
    "length": (("length", "len"), True, True),
    "long": (("long",), False, True),
    "width": (("width",), True, True),
    "wide": (("wide",), False, True),
    "height": (("height",), True, True),
    "tall": (("tall", "high"), False, True),
    "depth": (("depth",), True, True),
    "deep": (("deep",), False, True),
    "thickness": (("thickness", "thk"), True, True),
    "thick": (("thick",), False, True),
    "diameter": (("diameter", "dia", "diam"), True, True),
    "radius": (("radius",), True, True),
    "outer_diameter": (
        ("od", "outer diameter", "outside diameter", "external diameter", "outer dia"),
        True,
        True,
    ),
    "inner_diameter": (
        ("id", "inner diameter", "inside diameter", "internal diameter", "inner dia"),
        True,
        True,
    ),
    "bore": (("bore", "center hole", "centre hole", "central hole", "centre bore"), True, True),
    "wall": (("wall", "walls", "wall thickness"), True, True),
    "across": (("across", "across flats", "across the flats", "af"), False, True),
    "circle": (
        (
            "circle",
            "bolt circle",
            "pitch circle",
            "bolt circle diameter",
            "pitch circle diameter",
            "pcd",
            "bcd",
        ),
        True,
        True,
    ),
    "inset": (("inset", "margin", "edge distance"), True, True),
    "from_edge": (("from the edge", "from the edges", "from edges", "from each edge"), False, True),
    "side": (("side", "sides"), True, True),
}

HOLE_PHRASES: dict[str, bool] = {
    "hole": False,
    "holes": True,
    "bolt hole": False,
    "bolt holes": True,
    "mounting hole": False,
    "mounting holes": True,
    "through hole": False,
    "through holes": True,
    "clearance hole": False,
    "clearance holes": True,
    "screw hole": False,
    "screw holes": True,
}
"""Names of holes -> plural."""

FLAG_PHRASES: dict[str, str] = {
    "lid": "lid",
    "with lid": "lid",
    "with a lid": "lid",
    "no lid": "no_lid",
    "without lid": "no_lid",
    "without a lid": "no_lid",
    "remove the lid": "no_lid",
    "open top": "no_lid",
    "open-top": "no_lid",
    "no holes": "no_holes",
    "without holes": "no_holes",
    "remove the holes": "no_holes",
    "hex": "hex",
    "hexagonal": "hex",
    "round": "round",
    "cylindrical": "round",
}

UNSUPPORTED: tuple[str, ...] = (
    "fillet",
    "filleted",
    "fillets",
    "rounded",
    "chamfer",
    "chamfered",
    "chamfers",
    "slot",
    "slots",
    "slotted",
    "pocket",
    "pockets",
    "countersunk",
    "countersink",
    "counterbore",
    "counterbored",
    "text",
    "logo",
    "engraved",
    "engrave",
    "embossed",
    "gear",
    "teeth",
    "vent",
    "vents",
    "rib",
    "ribs",
    "groove",
    "grooves",
    "knurled",
    "sphere",
    "ball",
    "cone",
    "conical",
    "tapered",
    "taper",
    "torus",
    "spring",
    "hinge",
    "cutout",
    "cut-out",
    "degrees",
    "deg",
    "°",
    "angled",
    "rotated",
)

RELATIVE: tuple[str, ...] = (
    "twice",
    "double",
    "half",
    "triple",
    "%",
    "percent",
    "bigger",
    "smaller",
    "larger",
    "thicker",
    "thinner",
    "longer",
    "shorter",
    "taller",
    "wider",
    "narrower",
    "deeper",
)

MAX_PROMPT_CHARS = 2000
FILLERS = frozenset(
    {"of", "a", "an", "the", "is", "be", "to", "at", "on", "with", "in", "=", ":", "each", "its"}
)
SEPARATORS = frozenset({"x", "by", "*"})
STOPS = frozenset({",", ";", ".", "and", "(", ")"})
HOLE_QUALIFIERS = frozenset({"more", "extra", "additional"})
FEWER = frozenset({"fewer", "less"})
REMOVE = frozenset({"remove", "minus"})

_TOKEN = re.compile(
    r"""(?P<thread>(?<![a-z0-9.])m\d+(?:\.\d+)?(?![\d.]))
      | (?P<num>\d+/\d+|\d*\.\d+|\d+)
      | (?P<word>[a-z]+(?:-[a-z]+)*|["%°*=:])
      | (?P<stop>[,;.()])
    """,
    re.VERBOSE,
)
_NUMBER_WORD = re.compile(r"\b(" + "|".join(units.NUMBER_WORDS) + r")\b")


@dataclass
class _Token:
    kind: str
    """num, thread, word, stop; after phrasing also label, hole, flag, part."""
    text: str
    value: float = 0.0
    unit: str | None = None
    name: str = ""
    """The canonical label, flag or part kind."""
    used: bool = False
    size_of_hole: bool = False

    def written(self) -> str:
        if self.kind == "num" and self.unit:
            return f"{self.text} {self.unit}"
        return self.text


def _normalise(prompt: str) -> str:
    text = prompt.lower()
    for old, new in (("\u00d7", " x "), ("ø", " diameter "), ("⌀", " diameter "), ("″", '"')):
        text = text.replace(old, new)
    text = text.replace("”", '"').replace("“", '"').replace("''", '"')
    text = _NUMBER_WORD.sub(lambda m: str(units.NUMBER_WORDS[m.group(1)]), text)
    # "4x3x1", "40x30": the separator x sits between digits; "x" is lexed as a word of its own.
    return text


def _number(text: str) -> float:
    if "/" in text:
        numerator, denominator = text.split("/")
        if float(denominator) == 0:
            raise PromptError(f"'{text}' is not a number")
        return float(numerator) / float(denominator)
    return float(text)


def _lex(text: str) -> list[_Token]:
    tokens = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "word"
        raw = match.group()
        if kind == "thread":
            tokens.append(_Token("thread", raw.upper(), value=float(raw[1:])))
        elif kind == "num":
            tokens.append(_Token("num", raw, value=_number(raw)))
        else:
            tokens.append(_Token(kind, raw))
    return tokens


def _phrase_table(part_words: Mapping[str, str]) -> dict[tuple[str, ...], tuple[str, str]]:
    table: dict[tuple[str, ...], tuple[str, str]] = {}
    for label, (phrases, _, _) in LABELS.items():
        for phrase in phrases:
            table[tuple(phrase.split())] = ("label", label)
    for phrase, plural in HOLE_PHRASES.items():
        table[tuple(phrase.split())] = ("hole", "holes" if plural else "hole")
    for phrase, flag in FLAG_PHRASES.items():
        table[tuple(phrase.split())] = ("flag", flag)
    for phrase, kind in part_words.items():
        table[tuple(phrase.split())] = ("part", kind)
    return table


def _attach_units(tokens: list[_Token], known: set[str]) -> tuple[list[_Token], str | None]:
    """Joins each number with the unit written right after it; a unit word standing alone
    ("all sizes in inches") is the prompt's unit for bare numbers. A '"' that follows no number
    shows the prompt uses quotation marks: then none of them is an inch mark. "in" after a
    number is inches unless a word the reader does not know follows ("5 in aluminium")."""
    quoted = any(
        t.text == '"' and (i == 0 or tokens[i - 1].kind != "num") for i, t in enumerate(tokens)
    )
    if quoted:
        tokens = [t for t in tokens if t.text != '"']
    out: list[_Token] = []
    prompt_unit: str | None = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if token.kind == "num" and nxt is not None and nxt.text in units.UNIT_WORDS:
            after = tokens[i + 2] if i + 2 < len(tokens) else None
            if (
                nxt.text == "in"
                and after is not None
                and _starts_label(tokens, i + 2)
                and not _after_label(tokens, i)
            ):
                raise PromptError(
                    f"'{token.text} in {after.text}' is ambiguous: write "
                    f"'{token.text} mm in {after.text}' or '{token.text} inch {after.text}'"
                )
            if (
                nxt.text == "in"
                and after is not None
                and after.kind == "word"
                and after.text not in known | FILLERS | SEPARATORS | STOPS | units.UNIT_WORDS.keys()
            ):
                raise PromptError(
                    f"is '{token.text} in {after.text}' {token.text} inches? write 'inch' for "
                    "inches, or the unit of the number"
                )
            token.unit = units.UNIT_WORDS[nxt.text]
            out.append(token)
            i += 2
            continue
        if token.kind == "word" and token.text in units.UNIT_WORDS and token.text != "in":
            if out and out[-1].kind == "num":
                raise PromptError(f"'{out[-1].written()} {token.text}' has two units")
            unit = units.UNIT_WORDS[token.text]
            if prompt_unit not in (None, unit):
                raise PromptError(f"the prompt names two units: {prompt_unit}, {unit}")
            prompt_unit = unit
            i += 1
            continue
        out.append(token)
        i += 1
    return out, prompt_unit


def _after_label(tokens: list[_Token], i: int) -> bool:
    """Whether a label precedes the number at i ("radius 1 in"), which then needs no other."""
    k = i - 1
    while k >= 0 and tokens[k].text in FILLERS:
        k -= 1
    last_words = {phrase.split()[-1] for phrases, _, _ in LABELS.values() for phrase in phrases}
    return k >= 0 and tokens[k].kind == "word" and tokens[k].text in last_words


def _starts_label(tokens: list[_Token], i: int) -> bool:
    """Whether a noun label starts at i ("in diameter"; "in tall" can only be inches)."""
    words = [t.text for t in tokens[i : i + 4] if t.kind == "word"]
    for label_phrases, may_precede, _ in LABELS.values():
        if not may_precede:
            continue
        for phrase in label_phrases:
            parts = phrase.split()
            if words[: len(parts)] == parts:
                return True
    return False


def _phrase(tokens: list[_Token], table: dict[tuple[str, ...], tuple[str, str]]) -> list[_Token]:
    """Merges multi-word names (longest first) into label, hole, flag and part tokens."""
    longest = max(len(key) for key in table)
    out: list[_Token] = []
    i = 0
    while i < len(tokens):
        for n in range(min(longest, len(tokens) - i), 0, -1):
            window = tokens[i : i + n]
            if any(t.kind != "word" for t in window):
                continue
            key = tuple(t.text for t in window)
            if key in table:
                kind, name = table[key]
                out.append(_Token(kind, " ".join(key), name=name))
                i += n
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def _is_size(token: _Token) -> bool:
    return not token.used and (token.kind == "thread" or token.kind == "num")


def _read_holes(tokens: list[_Token]) -> list[tuple[int | None, bool, _Token | None, bool]]:
    """Hole phrases: [count] [more] [x] [size] hole(s) [of|for] [diameter] [size]."""
    found = []
    for h, token in enumerate(tokens):
        if token.kind != "hole":
            continue
        token.used = True
        count: int | None = None
        added = False
        size: _Token | None = None
        j = h - 1
        if j >= 0 and tokens[j].kind == "label" and tokens[j].name == "diameter":
            j -= 1  # "6 mm diameter holes"
        if j >= 0 and _is_size(tokens[j]) and (tokens[j].kind == "thread" or tokens[j].unit):
            size, j = tokens[j], j - 1
        if j >= 0 and tokens[j].text in SEPARATORS:
            j -= 1
        sign = 1
        if j >= 0 and tokens[j].text in HOLE_QUALIFIERS | FEWER:
            added, j = True, j - 1
            sign = -1 if tokens[j + 1].text in FEWER else 1
        if j >= 0 and tokens[j].kind == "num" and not tokens[j].unit and not tokens[j].used:
            if tokens[j].value != int(tokens[j].value):
                raise PromptError(f"'{tokens[j].text} {token.text}': a number of holes is whole")
            count = int(tokens[j].value)
            tokens[j].used = True
            tokens[j].kind = "count"
            if j >= 1 and tokens[j - 1].text in ("add", "plus"):
                added = True
            elif j >= 1 and tokens[j - 1].text in REMOVE:
                added, sign = True, -1
            count *= sign
        elif j >= 0 and tokens[j].text in ("a", "an", "single") and token.name == "hole":
            count = 1
        if size is None:
            k = h + 1
            skipped = []
            while k < len(tokens) and (
                tokens[k].text in ("of", "for", "with", "each", "at")
                or (tokens[k].kind == "label" and tokens[k].name == "diameter")
            ):
                skipped.append(tokens[k])
                k += 1
            if k < len(tokens) and _is_size(tokens[k]):
                after = tokens[k + 1] if k + 1 < len(tokens) else None
                # "holes 10 mm from the edges": that number belongs to the next label.
                if not (after is not None and after.kind == "label" and after.name != "diameter"):
                    size = tokens[k]
                    if after is not None and after.kind == "label" and after.name == "diameter":
                        skipped.append(after)
                    for word in skipped:
                        word.used = True
        if size is not None:
            size.used = True
            size.size_of_hole = True
        found.append((count, added, size, token.name == "holes"))
    return found


def _read_groups(tokens: list[_Token]) -> list[list[_Token]]:
    """Dimension groups: a x b [x c], "by" and "*" alike."""
    groups = []
    i = 0
    while i < len(tokens):
        if tokens[i].kind == "num" and not tokens[i].used:
            members = [tokens[i]]
            j = i + 1
            while (
                j + 1 < len(tokens)
                and tokens[j].text in SEPARATORS
                and tokens[j + 1].kind == "num"
                and not tokens[j + 1].used
            ):
                members.append(tokens[j + 1])
                j += 2
            if len(members) > 1:
                for member in members:
                    member.used = True
                unit = members[-1].unit
                for member in members:
                    member.unit = member.unit or unit
                groups.append(members)
                i = j
                continue
        i += 1
    return groups


def _read_labels(
    tokens: list[_Token],
) -> tuple[list[tuple[_Token, _Token]], list[tuple[str, str]]]:
    """Binds each label to the number right after it (skipping fillers) when it may precede its
    number, else to the number right before it."""
    bound: list[tuple[_Token, _Token]] = []
    dangling: list[tuple[str, str]] = []
    for i, token in enumerate(tokens):
        if token.kind != "label" or token.used:
            continue
        _, may_precede, may_follow = LABELS[token.name]
        target = None
        if may_precede:
            k = i + 1
            while k < len(tokens) and tokens[k].kind == "word" and tokens[k].text in FILLERS:
                k += 1
            if k < len(tokens) and _is_size(tokens[k]):
                target = tokens[k]
        if target is None and may_follow:
            k = i - 1
            while k >= 0 and tokens[k].kind == "word" and tokens[k].text in FILLERS:
                k -= 1
            if k >= 0 and _is_size(tokens[k]):
                target = tokens[k]
            elif k >= 0 and tokens[k].size_of_hole and token.name == "diameter":
                continue  # "holes of 6 mm diameter": the hole phrase has it
        if target is None:
            if not token.used:
                dangling.append((token.name, token.text))
            continue
        target.used = True
        token.used = True
        bound.append((token, target))
    return bound, dangling


def read(prompt: str, part_words: Mapping[str, str]) -> Reading:
    """What the prompt says. part_words: phrase naming a part -> its kind."""
    if len(prompt) > MAX_PROMPT_CHARS:
        raise PromptError(
            f"the prompt is {len(prompt)} characters long; a part of the catalogue is asked for "
            f"in at most {MAX_PROMPT_CHARS}"
        )
    table = _phrase_table(part_words)
    known = {word for phrase in table for word in phrase}
    tokens = _lex(_normalise(prompt))
    tokens, prompt_unit = _attach_units(tokens, known)
    tokens = _phrase(tokens, table)

    unsupported = tuple(t.text for t in tokens if t.kind == "word" and t.text in UNSUPPORTED)
    relative = tuple(t.text for t in tokens if t.kind == "word" and t.text in RELATIVE)

    holes = _read_holes(tokens)
    groups = _read_groups(tokens)
    labels, dangling = _read_labels(tokens)
    loose_tokens = [t for t in tokens if t.kind in ("num", "thread") and not t.used]
    default_unit = _default_unit(tokens, prompt_unit)

    def size(token: _Token) -> Size:
        if token.kind == "thread":
            return Thread(token.value, token.text)
        unit = token.unit or default_unit
        text = f"{token.text} {unit}" if token.unit else token.text
        return Length(units.to_mm(token.value, unit), text)

    def length(token: _Token) -> Length:
        value = size(token)
        assert isinstance(value, Length)
        return value

    return Reading(
        parts=tuple((t.name, t.text) for t in tokens if t.kind == "part"),
        groups=tuple(tuple(length(m) for m in group) for group in groups),
        labelled=tuple(Labelled(label.name, size(value), label.text) for label, value in labels),
        holes=tuple(
            HolePhrase(count, added, size(s) if s is not None else None, plural)
            for count, added, s, plural in holes
        ),
        loose_threads=tuple(Thread(t.value, t.text) for t in loose_tokens if t.kind == "thread"),
        loose=tuple(length(t) for t in loose_tokens if t.kind == "num"),
        flags=frozenset(t.name for t in tokens if t.kind == "flag"),
        unsupported=unsupported,
        relative=relative,
        dangling=tuple(dangling),
    )


def _default_unit(tokens: list[_Token], prompt_unit: str | None) -> str:
    """The unit of a number written without one: the prompt's ("in inches"), else the one unit
    the prompt uses, else millimetres. Two units and a bare number: refused, not guessed."""
    if prompt_unit:
        return prompt_unit
    named = sorted({t.unit for t in tokens if t.kind == "num" and t.unit})
    bare = [t.text for t in tokens if t.kind == "num" and not t.unit]
    if len(named) > 1 and bare:
        raise PromptError(
            f"the prompt mixes units ({', '.join(named)}) and gives {bare[0]} without one: "
            "write the unit of every number"
        )
    return named[0] if named else "mm"
