"""MongoDB connection: a real server for mongodb:// and mongodb+srv:// URIs, mongomock for
mongomock://NAME.

mongomock keeps its data inside the process. Clients opened on the same mongomock://NAME share
one in-memory server, as clients of one real server would: the all-in-one stack runs every
service in one process and they see the same data; tests pick a fresh NAME to start empty.
Store code keeps to the operations both implement, so its tests also run against a real
MongoDB when MONGODB_URI names one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import mongomock
import pymongo
from mongomock.store import ServerStore
from pymongo.database import Database
from pymongo.errors import PyMongoError

from cadpipe import errors
from cadpipe.settings import MongoSettings

T = TypeVar("T")

MOCK_SCHEME = "mongomock://"

_mock_stores: dict[str, Any] = {}
_mock_lock = threading.Lock()
_mock_op_lock = threading.RLock()
_mock_patched = False


def _serialise_mongomock_operations() -> None:
    """Makes mongomock's single-document operations atomic, as MongoDB's are.

    mongomock matches a filter and then changes the document in place, with no lock: two threads
    running update_one({..., "state": "processing"}, ...) on one document can both match (a
    compare-and-set that two callers win), and a reader copying a document while another thread
    changes it fails with "dictionary changed size during iteration". Services call pymongo from
    several threads (asyncio.to_thread) and rely on MongoDB's atomic single-document writes, so
    every mongomock read and write of this process runs behind one lock (as devstack does for
    moto's object requests).
    """
    global _mock_patched
    from mongomock.collection import Collection

    with _mock_lock:
        if _mock_patched:
            return

        def locked(method: Any) -> Any:
            def call(self: Any, *args: Any, **kwargs: Any) -> Any:
                with _mock_op_lock:
                    return method(self, *args, **kwargs)

            return call

        def materialised(method: Any) -> Any:
            # Cursors read lazily; copying the matches out under the lock keeps readers off
            # documents another thread is changing.
            def call(self: Any, *args: Any, **kwargs: Any) -> Any:
                with _mock_op_lock:
                    return iter(list(method(self, *args, **kwargs)))

            return call

        for name in (
            "_insert",
            "_update",
            "_delete",
            "_find_and_modify",
            "bulk_write",
            "count_documents",
            "aggregate",
        ):
            setattr(Collection, name, locked(getattr(Collection, name)))
        setattr(Collection, "_get_dataset", materialised(Collection._get_dataset))  # noqa: B010
        _mock_patched = True


def make_client(
    uri: str, *, event_listeners: Sequence[Any] = ()
) -> pymongo.MongoClient[dict[str, Any]]:
    """event_listeners: pymongo monitoring listeners (cadpipe.metrics counts failures with
    them); mongomock has no such events and ignores them."""
    if uri.startswith(MOCK_SCHEME):
        _serialise_mongomock_operations()
        name = uri.removeprefix(MOCK_SCHEME) or "default"
        with _mock_lock:
            store = _mock_stores.setdefault(name, ServerStore())
        client: Any = mongomock.MongoClient(_store=store, tz_aware=True)
        return client  # type: ignore[no-any-return]
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
