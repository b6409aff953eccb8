"""python -m services.scripts            runs the script service until SIGTERM/SIGINT
python -m services.scripts reindex    rebuilds its MongoDB documents from the bucket

Configuration comes from the environment (services/scripts/settings.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging

from cadpipe.grpc_server import serve_until_signalled
from cadpipe.logs import configure_logging
from cadpipe.settings import load_settings
from services.scripts.bootstrap import run_reindex, start
from services.scripts.settings import Settings

logger = logging.getLogger("services.scripts")


async def reindex(settings: Settings, project: str | None) -> None:
    report = await run_reindex(settings, project)
    logger.info(
        "reindex done",
        extra={
            "projects": report.projects,
            "versions": report.versions,
            "events_queued": report.events_queued,
            "missing_versions": report.missing_versions,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.scripts")
    commands = parser.add_subparsers(dest="command")
    rebuild = commands.add_parser("reindex", help="rebuild the MongoDB documents from S3")
    rebuild.add_argument("--project", help="only this project")
    args = parser.parse_args()
    configure_logging("scripts")
    settings = load_settings(Settings, "scripts")
    if args.command == "reindex":
        asyncio.run(reindex(settings, args.project))
    else:
        asyncio.run(serve_until_signalled(start(settings)))


if __name__ == "__main__":
    main()
