"""MongoDB connection: a real server for mongodb:// and mongodb+srv:// URIs, mongomock for
mongomock://NAME.

mongomock keeps its data inside the process. Clients opened on the same mongomock://NAME share
one in-memory server, as clients of one real server would: the all-in-one stack runs every
service in one process and they see the same data; tests pick a fresh NAME to start empty.
Store code keeps to the operations both implement, so its tests also run against a real
MongoDB when MONGODB_URI names one.
"""

from __future__ import annotations

import threading
from typing import Any

import mongomock
import pymongo
from pymongo.database import Database

from cadpipe.settings import MongoSettings

MOCK_SCHEME = "mongomock://"

_mock_stores: dict[str, Any] = {}
_mock_lock = threading.Lock()


def make_client(uri: str) -> pymongo.MongoClient[dict[str, Any]]:
    if uri.startswith(MOCK_SCHEME):
        name = uri.removeprefix(MOCK_SCHEME) or "default"
        with _mock_lock:
            store = _mock_stores.setdefault(name, mongomock.store.ServerStore())
        client: Any = mongomock.MongoClient(_store=store, tz_aware=True)
        return client  # type: ignore[no-any-return]
    return pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000, appname="cadpipe")


def connect(settings: MongoSettings) -> tuple[pymongo.MongoClient[dict[str, Any]], Database[dict[str, Any]]]:
    client = make_client(settings.mongodb_uri.get_secret_value())
    return client, client[settings.mongodb_database]


def ping(db: Database[dict[str, Any]]) -> None:
    """Raises when the server does not answer."""
    db.command("ping")
