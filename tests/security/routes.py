"""Every REST route the gateway serves, from its own route table (so a route added to the protos
is covered here without anyone listing it), with a well-formed example request for each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.gateway.routes import Route, default_modules, derive_routes_from_modules
from services.gateway.settings import Settings

SCRIPT = "import FreeCAD\nbox = 1\n"

EXAMPLE_PATH_VALUES = {
    "version": "1",
    "format": "stl",
    "name": "{project}_v1_info_20260101_000000.log",
    "id": "{project}-generation",
}

ROUTES: list[Route] = list(derive_routes_from_modules(default_modules()))
# the defaults the gateway ships with
PUBLIC_PATHS = frozenset(Settings.model_fields["public_paths"].default.split(","))
ADMIN_PREFIXES = tuple(Settings.model_fields["admin_path_prefixes"].default.split(","))


@dataclass(frozen=True)
class Example:
    route: Route
    method: str
    path: str
    json: Any = None

    @property
    def id(self) -> str:
        return f"{self.method} {self.route.path.openapi_path}"


def example(route: Route, project: str) -> Example:
    parts = []
    for segment in route.path.segments:
        if segment.literal is not None:
            parts.append(segment.literal)
        elif segment.field == "project":
            parts.append(project)
        else:
            assert segment.field is not None
            value = EXAMPLE_PATH_VALUES.get(segment.field)
            assert value is not None, f"no example value for path field {segment.field!r}"
            parts.append(value.format(project=project))
    body: dict[str, Any] | None = None
    if route.body:
        body = {"script": SCRIPT} if route.full_method.endswith("UploadScript") else {}
    return Example(route, route.http_method, "/" + "/".join(parts), body)


def is_public(route: Route) -> bool:
    return route.path.openapi_path in PUBLIC_PATHS


def protected_routes() -> list[Route]:
    return [r for r in ROUTES if not is_public(r)]


def is_admin(route: Route) -> bool:
    return route.path.openapi_path.startswith(ADMIN_PREFIXES) and not is_public(route)


def admin_routes() -> list[Route]:
    return [r for r in ROUTES if is_admin(r)]


def owned_routes() -> list[Route]:
    """Routes of one project for its owner: anyone else gets the answer for a project that
    does not exist."""
    return [r for r in ROUTES if "project" in r.path.fields and not is_admin(r)]


def route_id(route: Route) -> str:
    return f"{route.http_method} {route.path.openapi_path}"
