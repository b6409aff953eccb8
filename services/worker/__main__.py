"""python -m services.worker: runs the FreeCAD worker until SIGTERM/SIGINT.

Configuration comes from the environment (services/worker/settings.py)."""

from __future__ import annotations

import asyncio

from cadpipe.grpc_server import serve_until_signalled
from cadpipe.logs import configure_logging
from cadpipe.settings import load_settings
from services.worker.bootstrap import start
from services.worker.settings import Settings


def main() -> None:
    configure_logging("worker")
    settings = load_settings(Settings, "worker")
    asyncio.run(
        serve_until_signalled(
            start(settings), stopping="stopping: no new jobs; running ones may finish"
        )
    )


if __name__ == "__main__":
    main()
