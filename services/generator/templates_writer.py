"""ports.ScriptWriter over the built-in template catalogue (services.generator.templates): the
provider `templates`, the default when no LLM is configured, so text to CAD works offline. It
knows the geometry of what it makes, and says so (Completion.expected); a prompt it cannot make
is CannotMake, whose message lists what it can."""

from __future__ import annotations

import time

from services.generator.ports import Completion, ScriptRequest
from services.generator.templates import PROVIDER, make_part

MODEL = "catalogue"


class TemplatesWriter:
    name = PROVIDER

    async def write(self, request: ScriptRequest) -> Completion:
        started = time.perf_counter()
        part = make_part(request.prompt, parent_script=request.parent_script)
        notes = {"kind": part.kind, **{k: f"{v:g}" for k, v in part.parameters.items()}}
        if part.defaulted:
            notes["defaulted"] = ",".join(part.defaulted)
        return Completion(
            script=part.script,
            provider=PROVIDER,
            model=MODEL,
            latency_seconds=time.perf_counter() - started,
            expected=part.expected,
            notes=notes,
        )
