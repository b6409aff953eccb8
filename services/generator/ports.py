"""The generator's ports: what the generation loop needs from a script writer (an LLM provider or
the template catalogue). Adapters implement them; the loop and its tests see only these."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cadpipe import errors
from cadpipe.callers import Caller

if TYPE_CHECKING:
    from services.generator.domain import Generation


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


# --- what the generation loop drives (adapters: mongo_generations, grpc_clients, nats_events) ---


@dataclass(frozen=True)
class RunOutcome:
    """How a version's run ended, as the watcher decided it."""

    state: str
    """"completed", "error" or "timeout"."""
    error: str = ""
    """The error summary (the log's last lines), for error and timeout."""


@dataclass(frozen=True)
class Report:
    """A completed version's geometry report, reduced to what verification needs."""

    measured: Measured | None
    """None when no output file had a solid."""
    freecad_version: str = ""


class ScriptUploader(Protocol):
    """The script service, called on behalf of the generation's caller."""

    async def upload(
        self,
        caller: Caller,
        project: str,
        script: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> int:
        """Uploads the script as the project's next version; returns the version. Raises
        errors.InvalidArgument when the script service refuses it, errors.NotFound when the
        project is not the caller's, errors.Unavailable when it does not answer."""
        ...

    async def read(self, caller: Caller, project: str, version: int) -> str:
        """A version's script; errors.NotFound when there is no such version (or project)."""
        ...


class CompletionWaiter(Protocol):
    async def wait(self, caller: Caller, project: str, version: int) -> RunOutcome:
        """Returns once the version is completed, error or timeout (however long that takes:
        the caller bounds it with the generation's deadline)."""
        ...


class ReportReader(Protocol):
    async def report(self, caller: Caller, project: str, version: int) -> Report: ...


class GenerationEvents(Protocol):
    async def publish(self, generation: Generation) -> None:
        """Publishes the generation as a GenerationUpdated (best effort: the state is already
        stored)."""
        ...


class GenerationStore(Protocol):
    """MongoDB's `generations` (and `generation_keys`, the idempotency keys)."""

    async def insert(
        self, generation: Generation, *, runner: str, lease_until: dt.datetime
    ) -> Generation | None:
        """Stores a new generation, held by `runner`. With an idempotency key already used for
        the project, stores nothing and returns the generation that key started; else None."""
        ...

    async def save(self, generation: Generation, *, runner: str, lease_until: dt.datetime) -> bool:
        """Stores the generation if its stored sequence is one less and `runner` still holds
        it (compare-and-set); False when another runner took it over."""
        ...

    async def get(self, project: str, generation_id: str) -> Generation | None: ...

    async def page(self, project: str, *, limit: int, after: str) -> tuple[list[Generation], str]:
        """Newest first; `after` is the previous page's token; returns the next token."""
        ...

    async def claim_lapsed(
        self, runner: str, *, now: dt.datetime, until: dt.datetime, limit: int
    ) -> list[Generation]:
        """Takes over unfinished generations whose runner's lease lapsed."""
        ...

    async def renew(self, runner: str, ids: list[str], *, until: dt.datetime) -> None:
        """Extends the leases of these generations, where `runner` still holds them."""
        ...

    async def release(self, runner: str, *, now: dt.datetime) -> None:
        """Lets any runner take this runner's unfinished generations at once (shutdown)."""
        ...

    async def since(self, created_after: dt.datetime | None) -> list[Generation]:
        """Every generation created after that time (all when None), for the AI metrics."""
        ...


class ProjectOwners(Protocol):
    async def owner_of(self, project: str) -> str | None:
        """ "" for a project without an owner, None for a project that does not exist."""
        ...
