"""Small in-memory stand-ins for the generator's ports, recording what happened."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping

from cadpipe import errors
from cadpipe.callers import Caller
from services.generator.domain import Generation
from services.generator.ports import (
    Completion,
    Expected,
    Measured,
    Report,
    RunOutcome,
    ScriptRequest,
)
from services.generator.templates_writer import TemplatesWriter

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

BOX_SCRIPT = """import os
import FreeCAD
import Part

doc = FreeCAD.newDocument("Model")
box = doc.addObject("Part::Feature", "Box")
box.Shape = Part.makeBox({x}, {y}, {z})
doc.recompute()
out = os.environ["FREECAD_OUTPUT"]
Part.export([box], os.path.join(out, "MyHeadlessModel.step"))
doc.saveAs(os.path.join(out, "MyHeadlessModel.FCStd"))
"""


def box_script(x: float = 10, y: float = 20, z: float = 30) -> str:
    return BOX_SCRIPT.format(x=x, y=y, z=z)


RAISING_SCRIPT = """import FreeCAD
raise ValueError("the fillet radius is too large")
"""


class Clock:
    def __init__(self) -> None:
        self.now = EPOCH

    def __call__(self) -> dt.datetime:
        return self.now


class ScriptedWriter:
    """Answers each request with the next script of its list (the last one repeats), and
    records the requests."""

    name = "fake"

    def __init__(
        self,
        scripts: list[str],
        *,
        expected: Expected | None = None,
        error: Exception | None = None,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.scripts = scripts
        self.requests: list[ScriptRequest] = []
        self.asked = asyncio.Event()
        """Set by the first request."""
        self.expected = expected
        self.error = error
        self.gate = gate

    async def write(self, request: ScriptRequest) -> Completion:
        self.requests.append(request)
        self.asked.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        script = self.scripts[min(len(self.requests), len(self.scripts)) - 1]
        return Completion(
            script=script,
            provider="fake",
            model="fake-1",
            tokens_in=100,
            tokens_out=50,
            cost_usd=0.001,
            latency_seconds=0.01,
            expected=self.expected,
        )


class PromptWriter:
    """One writer for a stack shared by several tests: each test routes its own prompt to a
    ScriptedWriter of its own; any other prompt goes to the real template catalogue."""

    name = "fake"

    def __init__(self) -> None:
        self.routes: dict[str, ScriptedWriter] = {}
        self.templates = TemplatesWriter()

    def route(self, prompt: str, writer: ScriptedWriter) -> ScriptedWriter:
        self.routes[prompt] = writer
        return writer

    async def write(self, request: ScriptRequest) -> Completion:
        routed = self.routes.get(request.prompt)
        if routed is None:
            return await self.templates.write(request)
        return await routed.write(request)


class FakeStore:
    def __init__(self) -> None:
        self.docs: dict[str, tuple[Generation, str, dt.datetime]] = {}
        self.keys: dict[tuple[str, str], str] = {}
        self.saved: list[Generation] = []

    async def insert(
        self, generation: Generation, *, runner: str, lease_until: dt.datetime
    ) -> Generation | None:
        if generation.idempotency_key:
            key = (generation.project, generation.idempotency_key)
            if key in self.keys:
                return self.docs[self.keys[key]][0]
            self.keys[key] = generation.id
        self.docs[generation.id] = (generation, runner, lease_until)
        self.saved.append(generation)
        return None

    async def save(self, generation: Generation, *, runner: str, lease_until: dt.datetime) -> bool:
        stored, holder, _ = self.docs[generation.id]
        if stored.sequence != generation.sequence - 1 or holder != runner:
            return False
        self.docs[generation.id] = (generation, runner, lease_until)
        self.saved.append(generation)
        return True

    async def get(self, project: str, generation_id: str) -> Generation | None:
        found = self.docs.get(generation_id)
        return found[0] if found and found[0].project == project else None

    async def page(self, project: str, *, limit: int, after: str) -> tuple[list[Generation], str]:
        found = [g for g, _, _ in self.docs.values() if g.project == project]
        return sorted(found, key=lambda g: g.created_at, reverse=True)[:limit], ""

    async def claim_lapsed(
        self, runner: str, *, now: dt.datetime, until: dt.datetime, limit: int
    ) -> list[Generation]:
        claimed = []
        for gid, (g, _, lease) in list(self.docs.items()):
            if not g.terminal and lease < now:
                self.docs[gid] = (g, runner, until)
                claimed.append(g)
        return claimed[:limit]

    async def renew(self, runner: str, ids: list[str], *, until: dt.datetime) -> None:
        for gid, (g, holder, _) in list(self.docs.items()):
            if gid in ids and holder == runner and not g.terminal:
                self.docs[gid] = (g, holder, until)

    async def release(self, runner: str, *, now: dt.datetime) -> None:
        for gid, (g, holder, _) in list(self.docs.items()):
            if holder == runner and not g.terminal:
                self.docs[gid] = (g, holder, now - dt.timedelta(seconds=1))

    async def since(self, created_after: dt.datetime | None) -> list[Generation]:
        return [g for g, _, _ in self.docs.values()]


@dataclasses.dataclass
class Upload:
    caller: Caller
    project: str
    script: str
    metadata: Mapping[str, str]
    key: str
    version: int


class FakeScripts:
    """The script service: versions per project, idempotency keys, parent scripts."""

    def __init__(self) -> None:
        self.uploads: list[Upload] = []
        self.by_key: dict[tuple[str, str], int] = {}
        self.scripts: dict[tuple[str, int], str] = {}
        self.refuse: str | None = None

    async def upload(
        self,
        caller: Caller,
        project: str,
        script: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> int:
        if self.refuse:
            raise errors.InvalidArgument(self.refuse)
        if (project, idempotency_key) in self.by_key:
            return self.by_key[(project, idempotency_key)]
        version = 1 + max((v for p, v in self.scripts if p == project), default=0)
        self.scripts[(project, version)] = script
        self.by_key[(project, idempotency_key)] = version
        self.uploads.append(
            Upload(caller, project, script, dict(metadata), idempotency_key, version)
        )
        return version

    async def read(self, caller: Caller, project: str, version: int) -> str:
        if (project, version) not in self.scripts:
            raise errors.NotFound(f"{project} has no version {version}")
        return self.scripts[(project, version)]


class FakeRuns:
    """Runs scripts by a rule: `outcome(script)` gives the run's outcome and the geometry it
    measures. Doubles as the completion waiter and the report reader."""

    def __init__(
        self,
        scripts: FakeScripts,
        outcome: Callable[[str], tuple[RunOutcome, Measured | None]],
    ) -> None:
        self._scripts = scripts
        self._outcome = outcome
        self.waits: list[int] = []
        self.waiting = asyncio.Event()
        """Set once a wait began."""
        self.gate: asyncio.Event | None = None
        self.report_outages = 0
        """That many report reads fail as a watcher that does not answer."""
        self.freecad_version = ""
        """What the reports say the workers run."""

    async def wait(self, caller: Caller, project: str, version: int) -> RunOutcome:
        self.waits.append(version)
        self.waiting.set()
        if self.gate is not None:
            await self.gate.wait()
        return self._outcome(self._scripts.scripts[(project, version)])[0]

    async def report(self, caller: Caller, project: str, version: int) -> Report:
        if self.report_outages:
            self.report_outages -= 1
            raise errors.Unavailable("the watcher service did not answer: connection refused")
        return Report(
            measured=self._outcome(self._scripts.scripts[(project, version)])[1],
            freecad_version=self.freecad_version,
        )


def measured_box(x: float, y: float, z: float, *, valid: bool = True) -> Measured:
    return Measured(
        bbox_mm=(x, y, z),
        volume_mm3=x * y * z,
        area_mm2=2 * (x * y + y * z + x * z),
        solids=1,
        valid=valid,
    )


def box_runs(request_script: str) -> tuple[RunOutcome, Measured | None]:
    """Scripts raising fail with a traceback; box scripts measure their box."""
    if "raise" in request_script:
        return RunOutcome(
            "error",
            'Traceback (most recent call last):\n  File "p_v1.py", line 2\n'
            "ValueError: the fillet radius is too large",
        ), None
    for line in request_script.splitlines():
        if "Part.makeBox(" in line:
            args = line.split("Part.makeBox(")[1].rstrip(")").split(",")
            x, y, z = (float(a) for a in args)
            return RunOutcome("completed"), measured_box(x, y, z)
    return RunOutcome("completed"), None


class FakeEvents:
    def __init__(self) -> None:
        self.published: list[Generation] = []

    async def publish(self, generation: Generation) -> None:
        self.published.append(generation)

    def states(self, generation_id: str) -> list[str]:
        found: list[str] = []
        for g in self.published:
            if g.id == generation_id and (not found or found[-1] != g.state):
                found.append(g.state)
        return found


class FakeOwners:
    def __init__(self, owners: dict[str, str] | None = None) -> None:
        self.owners = owners or {}

    async def owner_of(self, project: str) -> str | None:
        return self.owners.get(project)
