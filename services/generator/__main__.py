"""python -m services.generator     runs the generator until SIGTERM/SIGINT.

Configuration comes from the environment (services/generator/settings.py)."""

from __future__ import annotations

import asyncio

from cadpipe.grpc_server import serve_until_signalled
from cadpipe.logs import configure_logging
from cadpipe.settings import load_settings
from services.generator.bootstrap import start
from services.generator.settings import Settings


def main() -> None:
    configure_logging("generator")
    settings = load_settings(Settings, "generator")
    asyncio.run(serve_until_signalled(start(settings)))


if __name__ == "__main__":
    main()
