"""make_part: a prompt (and, for an edit, the script it edits) to a part of the catalogue, or
CannotMake with a message that says why and lists what the catalogue makes."""

from __future__ import annotations

from dataclasses import dataclass

from services.generator.ports import CannotMake, Expected
from services.generator.templates import script as scripts
from services.generator.templates.parts import BY_KIND, PART_WORDS, PARTS, SUBSUMES, Part, Refused
from services.generator.templates.prompt import PromptError, Reading, read

PROVIDER = "templates"
"""The provider name the generator records for these scripts."""


@dataclass(frozen=True)
class TemplatePart:
    kind: str
    parameters: dict[str, float]
    script: str
    expected: Expected
    defaulted: tuple[str, ...] = ()
    """Parameters the prompt did not give (also named in the script's header comment)."""


@dataclass(frozen=True)
class CatalogueEntry:
    kind: str
    description: str
    example: str


CATALOGUE: tuple[CatalogueEntry, ...] = tuple(
    CatalogueEntry(part.kind, part.description, part.example) for part in PARTS
)


def catalogue_text() -> str:
    return "; ".join(f"{entry.kind} ('{entry.example}')" for entry in CATALOGUE)


def make_part(prompt: str, *, parent_script: str | None = None) -> TemplatePart:
    """The part the prompt asks for, or the parent script's part changed as the prompt says.
    Raises CannotMake for a part the catalogue does not have, an impossible one, or a prompt it
    cannot read without guessing."""
    try:
        if parent_script is not None:
            return _edit(prompt, parent_script)
        return _make(prompt)
    except (PromptError, Refused, scripts.HeaderError) as error:
        reason = str(error).rstrip(".")
        raise CannotMake(
            f"templates cannot make this: {reason}. They make: {catalogue_text()}.",
            field="prompt",
        ) from None


def _kinds(reading: Reading) -> set[str]:
    kinds = {kind for kind, _ in reading.parts}
    for kind in list(kinds):
        kinds -= SUBSUMES.get(kind, frozenset())
    return kinds


def _refuse_unsupported(reading: Reading) -> None:
    if reading.unsupported:
        features = ", ".join(sorted(set(reading.unsupported)))
        raise Refused(f"the catalogue's parts have no {features}")
    if reading.relative:
        raise Refused(
            f"sizes must be given in numbers, not relative to the part ('{reading.relative[0]}'):"
            " say, for example, 'make it 10 mm thick'"
        )


def _make(prompt: str) -> TemplatePart:
    reading = read(prompt, PART_WORDS)
    _refuse_unsupported(reading)
    kinds = _kinds(reading)
    if not kinds:
        raise Refused("the prompt names no part of the catalogue")
    if len(kinds) > 1:
        words = ", ".join(word for _, word in reading.parts)
        raise Refused(f"the prompt names several parts ({words}); templates make one at a time")
    part = BY_KIND[kinds.pop()]
    given = part.read(reading, editing=False)
    parameters, defaulted = part.finish(given, {})
    return _part(part, parameters, defaulted, prompt)


def _edit(prompt: str, parent_script: str) -> TemplatePart:
    try:
        header = scripts.read_header(parent_script)
    except scripts.HeaderError as error:
        raise Refused(f"templates only edit scripts they wrote, and this one: {error}") from None
    if header is None or header.kind not in BY_KIND:
        raise Refused(
            "templates can only edit scripts they wrote (which start with a "
            f"'{scripts.HEADER_PREFIX.strip()}' line); this one is not"
        )
    part = BY_KIND[header.kind]
    reading = read(prompt, PART_WORDS)
    _refuse_unsupported(reading)
    other = _kinds(reading) - {part.kind}
    if other:
        raise Refused(
            f"the script is a {part.kind} and templates do not turn it into a "
            f"{', '.join(sorted(other))}; ask for a new part instead of an edit"
        )
    given = part.read(reading, editing=True)
    if not given.values and not given.added_holes:
        unclear = f" ('{reading.dangling[0][1]}' has no number)" if reading.dangling else ""
        raise Refused(
            f"found nothing to change in the {part.kind}{unclear}; name a size, e.g. "
            f"'make it 20 mm thick', from: {part.vocabulary()}"
        )
    unknown = set(header.parameters) - set(part.parameters)
    if unknown:
        raise Refused(f"its header names parameters a {part.kind} does not have: {sorted(unknown)}")
    base = part.edit_base(header.parameters, header.defaulted)
    parameters, defaulted = part.finish(given, base)
    for name in header.defaulted:
        if name in base and name not in given.values and name not in defaulted:
            defaulted[name] = "defaulted in the script this edits"
    return _part(part, parameters, defaulted, prompt)


def _part(
    part: Part, parameters: dict[str, float], defaulted: dict[str, str], prompt: str
) -> TemplatePart:
    expected = part.expected(parameters)
    return TemplatePart(
        kind=part.kind,
        parameters=parameters,
        script=scripts.render(part, parameters, defaulted, expected, prompt),
        expected=expected,
        defaulted=tuple(sorted(defaulted)),
    )
