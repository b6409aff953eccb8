"""Project owners, read from the script service's `projects` documents (cadpipe.ownership): the
watcher answers for a project only to the identity that owns it."""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo.database import Database

from cadpipe import ownership


class MongoProjectOwners:
    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self._db = db

    async def owner_of(self, project: str) -> str | None:
        return await asyncio.to_thread(ownership.read_owner, self._db, project)
