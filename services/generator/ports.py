"""The generator's ports: what the generation loop needs from a script writer (an LLM provider or
the template catalogue). Adapters implement them; the loop and its tests see only these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from cadpipe import errors


@dataclass(frozen=True)
class Expected:
    """What the part must measure; None: not checked."""

    bbox_mm: tuple[float, float, float] | None = None
    bbox_tolerance_mm: float = 0.5
    volume_mm3: float | None = None
    volume_tolerance: float = 0.02
    solids: int | None = None


@dataclass(frozen=True)
class Measured:
    """What FreeCAD measured of a completed version (its geometry report)."""

    bbox_mm: tuple[float, float, float]
    volume_mm3: float
    area_mm2: float
    solids: int
    valid: bool


@dataclass(frozen=True)
class Attempt:
    """A previous round, told to the writer so that it can repair it."""

    round: int
    script: str
    feedback: str
    """The error line and log tail, the check that refused it, or measured vs expected."""
    measured: Measured | None = None


@dataclass(frozen=True)
class ScriptRequest:
    prompt: str
    freecad_version: str
    """The FreeCAD version the workers run ("0.20.2", "1.0.0"), told to the model."""
    expected: Expected = Expected()
    parent_script: str | None = None
    """Edit this script instead of writing one afresh."""
    attempts: tuple[Attempt, ...] = ()
    """Earlier rounds of this generation, oldest first; empty on the first round."""


@dataclass(frozen=True)
class Completion:
    script: str
    provider: str
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    """0 when the provider does not report a cost."""
    latency_seconds: float = 0.0
    expected: Expected | None = None
    """The geometry the writer itself knows the part has (the template catalogue does), checked
    when the request gave no expectation of its own."""
    notes: dict[str, str] = field(default_factory=dict)


class ProviderError(errors.Unavailable):
    """The provider failed: the message names what failed (HTTP status, timeout, malformed
    answer, refusal, empty answer) and is shown to the user as the generation's error."""


class CannotMake(errors.InvalidArgument):
    """The writer cannot make what the prompt asks (the template catalogue's answer to a part it
    does not know); the message lists what it can make."""


class ScriptWriter(Protocol):
    name: str
    """The provider's name ("openai", "templates"), recorded with every round."""

    async def write(self, request: ScriptRequest) -> Completion: ...
