"""MongoDB connection: a real server for mongodb:// and mongodb+srv:// URIs, mongomock for
mongomock://NAME.

mongomock (cadpipe.devstack) keeps its data inside the process. Clients opened on the same
mongomock://NAME share one in-memory server, as clients of one real server would: the
all-in-one stack runs every service in one process and they see the same data; tests pick a
fresh NAME to start empty.
Store code keeps to the operations both implement, so its tests also run against a real
MongoDB when MONGODB_URI names one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pymongo
from pymongo.database import Database
from pymongo.errors import PyMongoError

from cadpipe import errors
from cadpipe.settings import MongoSettings

T = TypeVar("T")

MOCK_SCHEME = "mongomock://"


def make_client(
    uri: str, *, event_listeners: Sequence[Any] = ()
) -> pymongo.MongoClient[dict[str, Any]]:
    """event_listeners: pymongo monitoring listeners (cadpipe.metrics counts failures with
    them); mongomock has no such events and ignores them."""
    if uri.startswith(MOCK_SCHEME):
        from cadpipe import devstack  # the local stack's in-process MongoDB, never production's

        return devstack.mongomock_client(uri.removeprefix(MOCK_SCHEME) or "default")
    return pymongo.MongoClient(
        uri,
        tz_aware=True,
        serverSelectionTimeoutMS=5000,
        appname="cadpipe",
        event_listeners=list(event_listeners),
    )


def connect(
    settings: MongoSettings, *, event_listeners: Sequence[Any] = ()
) -> tuple[pymongo.MongoClient[dict[str, Any]], Database[dict[str, Any]]]:
    client = make_client(settings.mongodb_uri.get_secret_value(), event_listeners=event_listeners)
    return client, client[settings.mongodb_database]


def ping(db: Database[dict[str, Any]]) -> None:
    """Raises when the server does not answer."""
    db.command("ping")


async def in_thread(blocking: Callable[[], T]) -> T:
    """The one way async code calls pymongo: in a thread, MongoDB's failures raised as
    errors.Unavailable (a DuplicateKeyError the blocking function does not handle too: it is a
    PyMongoError, and an adapter that expects one catches it inside)."""
    try:
        return await asyncio.to_thread(blocking)
    except PyMongoError as error:
        raise errors.Unavailable(f"MongoDB: {error}") from error
