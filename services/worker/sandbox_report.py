"""The geometry report, measured in the job after a successful script (sandbox_runner.py loads
this file by path and calls geometry_report): per output file, its solids (validity, volume,
area, bounding box) for B-rep formats and FreeCAD documents, its triangles and closedness for
meshes. Runs under FreeCAD's Python, with the standard library and FreeCAD's modules only."""

from __future__ import annotations

import os
from typing import Any

MESH_FORMATS = ("stl", "obj")
BREP_FORMATS = ("step", "stp", "iges", "igs", "brep", "brp")


def _bound_box(box: Any) -> dict[str, float]:
    return {
        "x_min": box.XMin,
        "y_min": box.YMin,
        "z_min": box.ZMin,
        "x_max": box.XMax,
        "y_max": box.YMax,
        "z_max": box.ZMax,
    }


def _solids(shape: Any, source: str = "") -> list[dict[str, Any]]:
    found = []
    for solid in shape.Solids:
        entry: dict[str, Any] = {
            "valid": bool(solid.isValid()),
            "volume": float(solid.Volume),
            "area": float(solid.Area),
            "bounding_box": _bound_box(solid.BoundBox),
            "faces": len(solid.Faces),
        }
        if source:
            entry["object"] = source
        found.append(entry)
    return found


def _brep_entry(path: str) -> dict[str, Any]:
    import Part  # type: ignore[import-not-found]

    shape = Part.read(path)
    return {
        "kind": "brep",
        "solids": _solids(shape),
        "shells": len(shape.Shells),
        "faces": len(shape.Faces),
        "valid": bool(shape.isValid()) if not shape.isNull() else False,
    }


def _fcstd_entry(path: str) -> dict[str, Any]:
    import FreeCAD  # type: ignore[import-not-found]

    doc = FreeCAD.openDocument(path)
    try:
        solids: list[dict[str, Any]] = []
        # The results of a document are the objects nothing else is built from; the boxes and
        # cylinders a Cut consumed are inputs, not parts of the model.
        for obj in doc.Objects:
            shape = getattr(obj, "Shape", None)
            if shape is None or obj.InList or shape.isNull():
                continue
            solids.extend(_solids(shape, obj.Label))
        return {"kind": "document", "solids": solids, "objects": len(doc.Objects)}
    finally:
        FreeCAD.closeDocument(doc.Name)


def _mesh_entry(path: str) -> dict[str, Any]:
    import Mesh  # type: ignore[import-not-found]

    mesh = Mesh.Mesh(path)
    closed = bool(mesh.isSolid())
    entry: dict[str, Any] = {
        "kind": "mesh",
        "triangles": int(mesh.CountFacets),
        "points": int(mesh.CountPoints),
        "closed": closed,
        "area": float(mesh.Area),
    }
    if closed:
        entry["volume"] = float(mesh.Volume)
    return entry


def geometry_report(output_dir: str) -> dict[str, Any]:
    """Per output file: its solids (validity, volume, area, bounding box) for B-rep formats and
    FreeCAD documents, its triangle count and closedness for meshes."""
    import FreeCAD

    files = []
    for root, dirs, names in os.walk(output_dir):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            ext = name.rpartition(".")[2].lower()
            entry: dict[str, Any] = {"path": os.path.relpath(path, output_dir)}
            try:
                if ext in BREP_FORMATS:
                    entry.update(_brep_entry(path))
                elif ext == "fcstd":
                    entry.update(_fcstd_entry(path))
                elif ext in MESH_FORMATS:
                    entry.update(_mesh_entry(path))
                else:
                    continue
            except Exception as error:  # an unreadable file is reported as such
                entry["error"] = f"{type(error).__name__}: {error}"[:500]
            files.append(entry)
    version = FreeCAD.Version()
    return {"freecad_version": ".".join(version[:3]), "files": files}
