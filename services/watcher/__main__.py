"""python -m services.watcher: the watcher alone, against the S3, MongoDB and NATS that its
environment names (see settings.py)."""

from __future__ import annotations

import asyncio
import logging

from cadpipe.grpc_server import stop_event_on_signals
from cadpipe.logs import configure_logging
from cadpipe.settings import load_settings
from services.watcher.bootstrap import start
from services.watcher.settings import Settings

logger = logging.getLogger("services.watcher")


async def run(settings: Settings) -> None:
    stop = stop_event_on_signals()
    async with start(settings):
        await stop.wait()
        logger.info("stopping")


def main() -> None:
    configure_logging("watcher")
    settings = load_settings(Settings, "watcher")
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
