"""python -m services.worker: runs the FreeCAD worker until SIGTERM/SIGINT.

Configuration comes from the environment (services/worker/settings.py)."""

from __future__ import annotations

import asyncio
import logging

from cadpipe.grpc_server import stop_event_on_signals
from cadpipe.logs import configure_logging
from cadpipe.settings import load_settings
from services.worker.bootstrap import start
from services.worker.settings import Settings

logger = logging.getLogger("services.worker")


async def serve(settings: Settings) -> None:
    stop = stop_event_on_signals()
    async with start(settings):
        await stop.wait()
        logger.info("stopping: no new jobs; running ones may finish")


def main() -> None:
    configure_logging("worker")
    settings = load_settings(Settings, "worker")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
