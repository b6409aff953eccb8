"""ports.ScriptWriter over the built-in template catalogue (services.generator.templates): the
provider `templates`, the default when no LLM is configured, so text to CAD works offline. It
knows the geometry of what it makes, and says so (Completion.expected); a prompt it cannot make
is CannotMake, with the list of what it can."""

from __future__ import annotations

import importlib
import time

from services.generator.ports import Completion, ProviderError, ScriptRequest

PROVIDER = "templates"


class TemplatesWriter:
    name = PROVIDER

    async def write(self, request: ScriptRequest) -> Completion:
        try:
            # imported when first used: the catalogue is a package of its own
            templates = importlib.import_module("services.generator.templates")
        except ImportError as error:
            raise ProviderError(f"the template catalogue is not installed: {error}") from None
        started = time.perf_counter()
        part = templates.make_part(request.prompt, parent_script=request.parent_script)
        return Completion(
            script=part.script,
            provider=PROVIDER,
            model="catalogue",
            latency_seconds=time.perf_counter() - started,
            expected=part.expected,
            notes={"kind": str(part.kind), **{k: str(v) for k, v in dict(part.parameters).items()}},
        )
