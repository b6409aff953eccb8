"""python -m services.watcher: the watcher alone, against the S3, MongoDB and NATS that its
environment names (see settings.py)."""

from __future__ import annotations

import asyncio

from cadpipe.grpc_server import serve_until_signalled
from cadpipe.logs import configure_logging
from cadpipe.settings import load_settings
from services.watcher.bootstrap import start
from services.watcher.settings import Settings


def main() -> None:
    configure_logging("watcher")
    settings = load_settings(Settings, "watcher")
    asyncio.run(serve_until_signalled(start(settings)))


if __name__ == "__main__":
    main()
