"""`python -m services.gateway`: the REST gateway alone, configured from the environment
(HTTP_PORT, SCRIPTS_ADDR, WATCHER_ADDR, ...; see settings.py)."""

from __future__ import annotations

import asyncio
import logging

from cadpipe.grpc_server import stop_event_on_signals
from cadpipe.logs import configure_logging
from services.gateway.bootstrap import start
from services.gateway.settings import Settings

logger = logging.getLogger("services.gateway")


async def run(settings: Settings) -> None:
    stop = stop_event_on_signals()
    async with start(settings):
        await stop.wait()
        logger.info("stopping")


def main() -> None:
    configure_logging("gateway")
    asyncio.run(run(Settings()))


if __name__ == "__main__":
    main()
