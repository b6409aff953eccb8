"""Runs rendered template scripts in one FreeCAD process and measures what each wrote.

    CADPIPE_TEMPLATE_JOBS=jobs.json freecadcmd templates_runner.py

jobs.json: {"results": path, "jobs": [{"name", "script", "output"}]}. Each script runs as
__main__ with FREECAD_OUTPUT set to its own directory (an exception is recorded, since
freecadcmd exits 0 whatever the script does); its STEP file is then read back and measured.
"""

import json
import os
import runpy
import traceback

import FreeCAD  # noqa: F401
import Part


def measure(output):
    step = os.path.join(output, "MyHeadlessModel.step")
    shape = Part.read(step)
    box = shape.BoundBox
    return {
        "solids": len(shape.Solids),
        "volume": sum(solid.Volume for solid in shape.Solids),
        "bbox": [box.XLength, box.YLength, box.ZLength],
        "bbox_min": [box.XMin, box.YMin, box.ZMin],
        "valid": bool(shape.isValid()),
    }


def run(job):
    os.makedirs(job["output"], exist_ok=True)
    os.environ["FREECAD_OUTPUT"] = job["output"]
    result = {"name": job["name"]}
    try:
        runpy.run_path(job["script"], run_name="__main__")
        result["files"] = sorted(os.listdir(job["output"]))
        result.update(measure(job["output"]))
    except Exception:
        result["error"] = traceback.format_exc()
    return result


with open(os.environ["CADPIPE_TEMPLATE_JOBS"], encoding="utf-8") as f:
    request = json.load(f)
results = [run(job) for job in request["jobs"]]
with open(request["results"], "w", encoding="utf-8") as f:
    json.dump(results, f)
