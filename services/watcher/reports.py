"""A completed version's geometry report (output/{p}/v{N}/report.json, written by the worker:
services/worker/domain.py finish_report) as the typed GeometryReport. No I/O.

The part as a whole (`total`) comes from one file's B-rep, the STEP file, else the FCStd
document, else IGES (meshes have no solids): the bounding box over its solids, the sums of
volume, area and faces, valid when every solid is. Unset when no such file had a solid.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from cadpipe.v1 import artifacts_pb2

TOTAL_FROM = ("step", "fcstd", "iges")


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) else 0.0


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _box(raw: Any) -> tuple[float, float, float, float, float, float] | None:
    if not isinstance(raw, Mapping):
        return None
    values = [raw.get(k) for k in ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max")]
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        return None
    x0, y0, z0, x1, y1, z1 = (float(v) for v in values)  # type: ignore[arg-type]
    return x0, y0, z0, x1, y1, z1


def _solid(raw: Mapping[str, Any]) -> artifacts_pb2.SolidReport:
    box = _box(raw.get("bounding_box"))
    x, y, z = (box[3] - box[0], box[4] - box[1], box[5] - box[2]) if box else (0.0, 0.0, 0.0)
    return artifacts_pb2.SolidReport(
        x_mm=x,
        y_mm=y,
        z_mm=z,
        volume_mm3=_number(raw.get("volume")),
        area_mm2=_number(raw.get("area")),
        faces=_count(raw.get("faces")),
        valid=raw.get("valid") is True,
        object=str(raw.get("object", ""))[:200],
    )


def _file(raw: Mapping[str, Any]) -> artifacts_pb2.FileReport:
    listed = raw.get("solids")
    solids: list[Any] = listed if isinstance(listed, list) else []
    return artifacts_pb2.FileReport(
        path=str(raw.get("name") or raw.get("path") or ""),
        format=str(raw.get("format", "")),
        kind=str(raw.get("kind", "")),
        solids=[_solid(s) for s in solids if isinstance(s, Mapping)],
        triangles=_count(raw.get("triangles")),
        closed=raw.get("closed") is True,
        volume_mm3=_number(raw.get("volume")),
        area_mm2=_number(raw.get("area")),
        error=str(raw.get("error", ""))[:500],
    )


def _total(solids: list[Mapping[str, Any]]) -> artifacts_pb2.SolidReport:
    boxes = [b for b in (_box(s.get("bounding_box")) for s in solids) if b is not None]
    if boxes:
        x = max(b[3] for b in boxes) - min(b[0] for b in boxes)
        y = max(b[4] for b in boxes) - min(b[1] for b in boxes)
        z = max(b[5] for b in boxes) - min(b[2] for b in boxes)
    else:
        x = y = z = 0.0
    return artifacts_pb2.SolidReport(
        x_mm=x,
        y_mm=y,
        z_mm=z,
        volume_mm3=sum(_number(s.get("volume")) for s in solids),
        area_mm2=sum(_number(s.get("area")) for s in solids),
        faces=sum(_count(s.get("faces")) for s in solids),
        valid=all(s.get("valid") is True for s in solids) and len(boxes) == len(solids),
    )


def geometry_report(project: str, version: int, body: str) -> artifacts_pb2.GeometryReport:
    """Raises ValueError when the body is not a report."""
    raw = json.loads(body)
    if not isinstance(raw, Mapping):
        raise ValueError("the report is not a JSON object")
    files = (
        [f for f in raw.get("files", []) if isinstance(f, Mapping)]
        if isinstance(raw.get("files"), list)
        else []
    )
    report = artifacts_pb2.GeometryReport(
        project=project,
        version=version,
        freecad_version=str(raw.get("freecad_version", ""))[:40],
        files=[_file(f) for f in files],
        raw_json=body,
    )
    for fmt in TOTAL_FROM:
        for f in files:
            solids = [s for s in f.get("solids", []) or [] if isinstance(s, Mapping)]
            if str(f.get("format", "")).lower() == fmt and solids:
                report.total.CopyFrom(_total(solids))
                report.solids = len(solids)
                return report
    return report
