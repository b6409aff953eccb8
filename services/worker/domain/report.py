"""The geometry report: the runner's measurements, checked and bounded."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from services.worker.domain.outputs import OutputPlan, PlannedOutput

REPORT_SCHEMA = "cadpipe.report/1"
_BOX_FIELDS = ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _clean_solid(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    box = raw.get("bounding_box")
    solid: dict[str, Any] = {
        "valid": raw.get("valid") is True,
        "volume": _number(raw.get("volume")),
        "area": _number(raw.get("area")),
        "bounding_box": {k: _number(box.get(k)) for k in _BOX_FIELDS}
        if isinstance(box, Mapping)
        else None,
        "faces": _count(raw.get("faces")),
    }
    if isinstance(raw.get("object"), str):
        solid["object"] = raw["object"][:200]
    return solid


def _clean_file(raw: Mapping[str, Any], output: PlannedOutput, max_solids: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": output.name, "key": output.key, "format": output.format}
    if isinstance(raw.get("error"), str):
        entry["error"] = raw["error"][:500]
    kind = raw.get("kind")
    if kind in ("brep", "document"):
        entry["kind"] = kind
        solids = raw.get("solids")
        cleaned = (
            [s for s in map(_clean_solid, solids[:max_solids]) if s]
            if isinstance(solids, list)
            else []
        )
        entry["solids"] = cleaned
        for counter in ("shells", "faces", "objects"):
            if _count(raw.get(counter)) is not None:
                entry[counter] = raw[counter]
        if isinstance(raw.get("valid"), bool):
            entry["valid"] = raw["valid"]
    elif kind == "mesh":
        entry["kind"] = "mesh"
        entry["triangles"] = _count(raw.get("triangles"))
        entry["points"] = _count(raw.get("points"))
        entry["closed"] = raw.get("closed") is True
        entry["area"] = _number(raw.get("area"))
        if _number(raw.get("volume")) is not None:
            entry["volume"] = _number(raw.get("volume"))
    return entry


def finish_report(
    raw: Any, plan: OutputPlan, *, project: str, version: int, max_solids: int = 1000
) -> dict[str, Any]:
    """The report.json stored next to the outputs. The sandbox measured the files (it has
    FreeCAD); since the script ran in that same process, its numbers are taken as data to
    check, never trusted for shape: only known fields of the expected types are kept, and only
    for files that became outputs, named as stored."""
    by_path = {o.path: o for o in plan.outputs}
    files: list[dict[str, Any]] = []
    freecad_version = ""
    if isinstance(raw, Mapping):
        if isinstance(raw.get("freecad_version"), str):
            freecad_version = raw["freecad_version"][:40]
        for item in raw.get("files", []) if isinstance(raw.get("files"), list) else []:
            if isinstance(item, Mapping) and isinstance(item.get("path"), str) and (
                item["path"] in by_path
            ):
                files.append(_clean_file(item, by_path.pop(item["path"]), max_solids))
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "project": project,
        "version": version,
        "freecad_version": freecad_version,
        "files": sorted(files, key=lambda f: f["name"]),
    }
    if by_path:
        report["not_measured"] = sorted(o.name for o in by_path.values())
    solids = [s for f in files for s in f.get("solids", [])]
    report["all_solids_valid"] = bool(solids) and all(s["valid"] for s in solids)
    return report
