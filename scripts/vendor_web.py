"""Copies the browser code the web app and /docs load from node_modules (after `npm ci` in
services/gateway/web) into services/gateway/web/vendor, with each package's licence files.

The copies are committed (docs/webapp.md says why): `make vendor` refreshes them after a change
to services/gateway/web/package.json; nothing at build or run time needs the network.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

WEB = Path(__file__).resolve().parent.parent / "services" / "gateway" / "web"
MODULES = WEB / "node_modules"
VENDOR = WEB / "vendor"

FILES: dict[str, list[tuple[str, str]]] = {
    "three": [
        ("build/three.module.min.js", "three.module.min.js"),
        ("examples/jsm/controls/OrbitControls.js", "addons/OrbitControls.js"),
        ("examples/jsm/loaders/STLLoader.js", "addons/STLLoader.js"),
        ("examples/jsm/loaders/OBJLoader.js", "addons/OBJLoader.js"),
        ("LICENSE", "LICENSE"),
    ],
    "swagger-ui-dist": [
        ("swagger-ui-bundle.js", "swagger-ui-bundle.js"),
        ("swagger-ui.css", "swagger-ui.css"),
        ("LICENSE", "LICENSE"),
        ("NOTICE", "NOTICE"),
    ],
}


def main() -> int:
    if not MODULES.is_dir():
        sys.stderr.write(f"{MODULES} is missing: run `npm ci` in {WEB} first\n")
        return 1
    if VENDOR.exists():
        shutil.rmtree(VENDOR)
    for package, files in FILES.items():
        version = json.loads((MODULES / package / "package.json").read_text())["version"]
        target = VENDOR / package
        for source, name in files:
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(MODULES / package / source, destination)
        (target / "VERSION").write_text(f"{package} {version} (npm)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
