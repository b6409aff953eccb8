"""The generator's rules, with no I/O: a generation's states and rounds, what a request may ask,
the checks a script passes before it is uploaded, verification of what a version measured
against what it must measure, and when a repair round is worth another one.

A generation moves

    queued -> generating -> (upload: version N) -> verifying -> succeeded
                  \\                                  |
                   +--- repairing (round k) <---------+   (error, timeout, mismatch, rejected)
                                                      -> failed (max rounds, no improvement,
                                                         provider error, deadline)

Each round is one script from the writer. Its state: writing -> rejected (failed the checks
before upload) | uploading -> processing (version N) -> completed | error | timeout, and a
completed version -> verified | mismatch. A provider failure ends its round as provider_error.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from cadpipe import errors, layout
from services.generator.ports import Attempt, Expected, Measured

# --- states ----------------------------------------------------------------------------------

QUEUED = "queued"
GENERATING = "generating"
VERIFYING = "verifying"
REPAIRING = "repairing"
SUCCEEDED = "succeeded"
FAILED = "failed"
STATES = (QUEUED, GENERATING, VERIFYING, REPAIRING, SUCCEEDED, FAILED)
TERMINAL = (SUCCEEDED, FAILED)

# round states
WRITING = "writing"
REJECTED = "rejected"
UPLOADING = "uploading"
PROCESSING = "processing"
COMPLETED = "completed"
ERROR = "error"
TIMEOUT = "timeout"
VERIFIED = "verified"
MISMATCH = "mismatch"
PROVIDER_ERROR = "provider_error"
ROUND_FINISHED = (REJECTED, ERROR, TIMEOUT, VERIFIED, MISMATCH, PROVIDER_ERROR)

GUI_MODULES = frozenset({"FreeCADGui", "PySide", "PySide2", "PySide6", "PyQt4", "PyQt5", "PyQt6"})
GUI_PREFIXES = ("Qt",)
"""Modules a headless worker does not have: importing them fails every run, so a script that does
is refused before it costs a version."""

FEEDBACK_CHARS = 2000


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 4000
    max_rounds: int = 5
    default_max_rounds: int = 3
    max_script_bytes: int = 1024 * 1024


# --- what is stored --------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    round: int
    state: str = WRITING
    version: int = 0
    feedback: str = ""
    script: str = ""
    measured: Measured | None = None
    provider: str = ""
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_seconds: float = 0.0
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    expected: Expected | None = None
    """The geometry this round is verified against: the request's, else the writer's own."""

    @property
    def finished(self) -> bool:
        return self.state in ROUND_FINISHED


@dataclass(frozen=True)
class Generation:
    id: str
    project: str
    prompt: str
    caller: str
    """The identity the generation acts for (uploads are made on its behalf); "" anonymous."""
    caller_admin: bool
    created_at: dt.datetime
    deadline_at: dt.datetime
    expected: Expected | None = None
    parent_version: int = 0
    max_rounds: int = 3
    state: str = QUEUED
    result_version: int = 0
    error: str = ""
    provider: str = ""
    model: str = ""
    rounds: tuple[Round, ...] = ()
    updated_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    idempotency_key: str = ""
    sequence: int = 0
    """Increases with every stored change; events carry it."""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def round(self) -> int:
        return self.rounds[-1].round if self.rounds else 0

    @property
    def current(self) -> Round | None:
        return self.rounds[-1] if self.rounds else None

    @property
    def version(self) -> int:
        """The version of the round under way, or the one that succeeded."""
        if self.result_version:
            return self.result_version
        return self.rounds[-1].version if self.rounds else 0

    @property
    def message(self) -> str:
        """A line for a person: why it failed, or the first line of the last round's feedback."""
        if self.error:
            return self.error
        return _first_line(self.rounds[-1].feedback) if self.rounds else ""

    def with_round(self, updated: Round, *, state: str | None = None) -> Generation:
        """The generation with its last round replaced (or a new one appended)."""
        rounds = list(self.rounds)
        if rounds and rounds[-1].round == updated.round:
            rounds[-1] = updated
        else:
            rounds.append(updated)
        return replace(
            self,
            rounds=tuple(rounds),
            state=state or self.state,
            provider=updated.provider or self.provider,
            model=updated.model or self.model,
        )

    def succeeded(self, version: int, now: dt.datetime) -> Generation:
        return replace(self, state=SUCCEEDED, result_version=version, error="", finished_at=now)

    def failed(self, reason: str, now: dt.datetime) -> Generation:
        return replace(self, state=FAILED, error=reason[:FEEDBACK_CHARS], finished_at=now)

    def attempts(self) -> tuple[Attempt, ...]:
        """Earlier finished rounds, told to the writer so that it repairs the last one."""
        return tuple(
            Attempt(round=r.round, script=r.script, feedback=r.feedback, measured=r.measured)
            for r in self.rounds
            if r.finished and r.script
        )


# --- requests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewGeneration:
    project: str
    prompt: str
    expected: Expected | None
    parent_version: int
    max_rounds: int
    idempotency_key: str


@dataclass(frozen=True)
class ExpectedInput:
    """The request's expectation as sent: 0 means not checked."""

    bbox_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    bbox_tolerance_mm: float = 0.0
    volume_mm3: float = 0.0
    volume_tolerance: float = 0.0
    solids: int = 0


def _finite_non_negative(value: float, name: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise errors.InvalidArgument(
            f"{name}: must be a finite number, 0 or more (got {value})", field=name
        )
    return value


def check_expected(given: ExpectedInput) -> Expected | None:
    """The expectation to verify against, None when nothing is to be checked."""
    x, y, z = (
        _finite_non_negative(v, f"expect.bbox.{axis}_mm")
        for v, axis in zip(given.bbox_mm, "xyz", strict=True)
    )
    tolerance = _finite_non_negative(given.bbox_tolerance_mm, "expect.bbox_tolerance_mm")
    volume = _finite_non_negative(given.volume_mm3, "expect.volume_mm3")
    volume_tolerance = _finite_non_negative(given.volume_tolerance, "expect.volume_tolerance")
    if volume_tolerance >= 1:
        raise errors.InvalidArgument(
            "expect.volume_tolerance: a fraction below 1 (0.02 is 2 %), or 0 for the default",
            field="expect.volume_tolerance",
        )
    if given.solids < 0 or given.solids > 10000:
        raise errors.InvalidArgument(
            f"expect.solids: 0 to 10000 (got {given.solids})", field="expect.solids"
        )
    sizes = (x, y, z)
    if any(sizes) and not all(sizes):
        raise errors.InvalidArgument(
            "expect.bbox: give all three sizes (x_mm, y_mm, z_mm), or none", field="expect.bbox"
        )
    if tolerance and not any(sizes):
        raise errors.InvalidArgument(
            "expect.bbox_tolerance_mm: given without expect.bbox", field="expect.bbox_tolerance_mm"
        )
    if volume_tolerance and not volume:
        raise errors.InvalidArgument(
            "expect.volume_tolerance: given without expect.volume_mm3",
            field="expect.volume_tolerance",
        )
    if not any(sizes) and not volume and not given.solids:
        return None
    return Expected(
        bbox_mm=sizes if any(sizes) else None,
        bbox_tolerance_mm=tolerance or 0.5,
        volume_mm3=volume or None,
        volume_tolerance=volume_tolerance or 0.02,
        solids=given.solids or None,
    )


def check_project(project: str) -> str:
    try:
        return layout.check_project(project)
    except layout.InvalidProject as error:
        raise errors.InvalidArgument(f"project: {error}", field="project") from None


GENERATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_generation_id(generation_id: str) -> str:
    if not GENERATION_ID.fullmatch(generation_id):
        raise errors.InvalidArgument(
            "id: a generation id is 1 to 64 letters, digits, '-' and '_'", field="id"
        )
    return generation_id


def check_request(
    *,
    project: str,
    prompt: str,
    expected: ExpectedInput,
    parent_version: int,
    max_rounds: int,
    idempotency_key: str,
    limits: Limits,
) -> NewGeneration:
    check_project(project)
    if not prompt.strip():
        raise errors.InvalidArgument("prompt: must not be empty; say what to make", field="prompt")
    if len(prompt) > limits.max_prompt_chars:
        raise errors.InvalidArgument(
            f"prompt: {len(prompt)} characters; at most {limits.max_prompt_chars} allowed",
            field="prompt",
        )
    if parent_version < 0:
        raise errors.InvalidArgument(
            f"parent_version: 1 or more, or 0 for none (got {parent_version})",
            field="parent_version",
        )
    if max_rounds < 0 or max_rounds > limits.max_rounds:
        raise errors.InvalidArgument(
            f"max_rounds: 1 to {limits.max_rounds}, or 0 for {limits.default_max_rounds} "
            f"(got {max_rounds})",
            field="max_rounds",
        )
    if idempotency_key and (
        len(idempotency_key) > 128 or not all(0x21 <= ord(c) <= 0x7E for c in idempotency_key)
    ):
        raise errors.InvalidArgument(
            "idempotency_key: 1 to 128 printable ASCII characters without spaces",
            field="idempotency_key",
        )
    return NewGeneration(
        project=project,
        prompt=prompt,
        expected=check_expected(expected),
        parent_version=parent_version,
        max_rounds=max_rounds or limits.default_max_rounds,
        idempotency_key=idempotency_key,
    )


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


# --- before upload ---------------------------------------------------------------------------


def _gui_module(name: str) -> bool:
    top = name.split(".")[0]
    return top in GUI_MODULES or top.startswith(GUI_PREFIXES)


def check_script(script: str, *, max_bytes: int) -> str | None:
    """Why the script must not be uploaded, or None: it is empty or too large, does not compile
    (with its line), or imports the GUI, which no headless worker has."""
    if not script.strip():
        return "the script is empty"
    size = len(script.encode())
    if size > max_bytes:
        return f"the script is {size} bytes; at most {max_bytes} allowed"
    try:
        tree = ast.parse(compile(script, "script.py", "exec", flags=ast.PyCF_ONLY_AST))
    except SyntaxError as error:
        where = f"line {error.lineno}" if error.lineno else "somewhere"
        text = (error.text or "").strip()
        shown = f": {text}" if text else ""
        return f"SyntaxError at {where}: {error.msg}{shown}"
    except ValueError as error:  # null bytes
        return f"the script does not compile: {error}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            if _gui_module(name):
                return (
                    f"line {node.lineno}: imports {name}, a GUI module; the workers run FreeCAD "
                    "headless (freecadcmd), where it does not exist"
                )
    return None


# --- after a run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    ok: bool
    feedback: str
    distance: float = math.inf
    """How far the geometry is from what is expected (sum of relative errors); 0 when it fits."""


def _mm(value: float) -> str:
    return f"{value:.2f}"


def verify(measured: Measured | None, expected: Expected | None) -> Verdict:
    """A completed version is verified when it has at least one solid, every solid is valid, and
    the expected geometry (when given) is within tolerance. The feedback names measured vs
    expected, for a person and for the writer's repair."""
    if measured is None:
        return Verdict(False, "the run left no geometry report (no solid was measured)")
    if measured.solids < 1:
        return Verdict(
            False,
            "the outputs hold no solid: make closed solids (Part.Solid, Part.makeBox, ...) and "
            "save them",
        )
    if not measured.valid:
        return Verdict(False, "a solid is not valid (shape.isValid() is False); fix the geometry")
    if expected is None:
        return Verdict(True, f"{measured.solids} valid solid(s)", 0.0)
    problems: list[str] = []
    distance = 0.0
    if expected.bbox_mm is not None:
        got = measured.bbox_mm
        want = expected.bbox_mm
        off = [abs(g - w) for g, w in zip(got, want, strict=True)]
        if max(off) > expected.bbox_tolerance_mm:
            problems.append(
                f"bounding box measured {' x '.join(map(_mm, got))} mm, expected "
                f"{' x '.join(map(_mm, want))} mm (tolerance ±{expected.bbox_tolerance_mm:g} mm)"
            )
        distance += sum(o / max(w, 1e-9) for o, w in zip(off, want, strict=True))
    if expected.volume_mm3 is not None:
        relative = abs(measured.volume_mm3 - expected.volume_mm3) / expected.volume_mm3
        if relative > expected.volume_tolerance:
            problems.append(
                f"volume measured {measured.volume_mm3:.1f} mm³, expected "
                f"{expected.volume_mm3:.1f} mm³ (tolerance ±{expected.volume_tolerance:.1%})"
            )
        distance += relative
    if expected.solids is not None and measured.solids != expected.solids:
        problems.append(f"solids measured {measured.solids}, expected {expected.solids}")
        distance += abs(measured.solids - expected.solids)
    if problems:
        return Verdict(False, "geometry mismatch: " + "; ".join(problems), distance)
    return Verdict(True, "the geometry is within tolerance", 0.0)


def run_feedback(state: str, error: str) -> str:
    """A failed run told to the writer and to the user: the last line first (the exception),
    then the log's tail."""
    text = error.strip()
    if not text:
        return f"the run ended in {state} with no error text"
    lines = text.splitlines()
    tail = text[-FEEDBACK_CHARS:]
    return f"{lines[-1]}\n--- log tail ---\n{tail}"


def _level(r: Round) -> int:
    return {
        PROVIDER_ERROR: 0,
        REJECTED: 1,
        ERROR: 2,
        TIMEOUT: 2,
        MISMATCH: 3,
        VERIFIED: 4,
    }.get(r.state, 0)


def improves(new: Round, earlier: tuple[Round, ...], *, distance: float, best: float) -> bool:
    """Whether round `new` (failed) is progress over the rounds before it, so that another
    repair is worth its cost: a further stage (rejected -> ran -> ran and measured), or, at the
    same stage, a different error (the previous one was fixed) or geometry strictly closer to
    what is expected. The same failure twice is no progress."""
    if not earlier:
        return True
    previous = earlier[-1]
    if _level(new) != _level(previous):
        return _level(new) > _level(previous)
    if new.state == MISMATCH:
        return distance < best
    return _first_line(new.feedback) != _first_line(previous.feedback)


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else ""


def provenance(generation: Generation, r: Round, *, prompt_digest: str) -> Mapping[str, str]:
    """The version's metadata: where the script came from (S3 keeps it with the script)."""
    found = {
        "generator-provider": r.provider,
        "generator-model": r.model,
        "generation-id": generation.id,
        "generation-round": str(r.round),
        "parent-version": str(generation.parent_version),
        "prompt-sha256": prompt_digest,
        "tokens-in": str(r.tokens_in),
        "tokens-out": str(r.tokens_out),
        "latency-seconds": f"{r.latency_seconds:.3f}",
    }
    if r.cost_usd:
        found["cost-usd"] = f"{r.cost_usd:.6f}"
    return {k: v[:200] for k, v in found.items() if v}


def upload_key(generation_id: str, round_number: int) -> str:
    """The idempotency key of a round's upload: a round retried after a restart gets the version
    it made the first time, never a second one."""
    return f"gen-{generation_id}-r{round_number}"


# --- metrics ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


@dataclass
class ProviderStats:
    provider: str
    model: str
    calls: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class AiSummary:
    by_state: dict[str, int]
    first_round_success_rate: float
    success_rate: float
    mean_rounds: float
    p95_rounds: float
    providers: list[ProviderStats]


def summarize(generations: list[Generation]) -> AiSummary:
    by_state = dict.fromkeys(STATES, 0)
    finished = [g for g in generations if g.terminal]
    providers: dict[tuple[str, str], ProviderStats] = {}
    for g in generations:
        by_state[g.state] = by_state.get(g.state, 0) + 1
        for r in g.rounds:
            if not r.provider:
                continue
            stats = providers.setdefault((r.provider, r.model), ProviderStats(r.provider, r.model))
            stats.calls += 1
            stats.errors += r.state == PROVIDER_ERROR
            stats.latencies.append(r.latency_seconds)
            stats.tokens_in += r.tokens_in
            stats.tokens_out += r.tokens_out
            stats.cost_usd += r.cost_usd
    rounds = [float(g.round) for g in finished]
    succeeded = [g for g in finished if g.state == SUCCEEDED]
    return AiSummary(
        by_state=by_state,
        first_round_success_rate=(
            sum(1 for g in succeeded if g.round == 1) / len(finished) if finished else 0.0
        ),
        success_rate=len(succeeded) / len(finished) if finished else 0.0,
        mean_rounds=sum(rounds) / len(rounds) if rounds else 0.0,
        p95_rounds=percentile(rounds, 0.95),
        providers=sorted(providers.values(), key=lambda s: (s.provider, s.model)),
    )
