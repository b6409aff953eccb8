"""Following a project's event stream until something is decided.

EventFeed reads /events in a daemon thread and hands what it reads to the caller through a
queue, so the caller keeps the clock (the --timeout deadline holds even when the stream is
silent but for keepalives) and Ctrl-C lands in the main thread. When the connection drops the
feed reconnects with a growing pause and says so; the caller re-asks the status of what it
waits for on every (re)connection, as changes may have happened while nobody listened (the
stream's first frame is the project's latest version, not necessarily the one awaited).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cadpipe_cli import errors
from cadpipe_cli.api import Api, Json

VERSION_DONE = frozenset({"completed", "error", "timeout"})
GENERATION_DONE = frozenset({"succeeded", "failed"})
RECONNECT_PAUSES = (0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass(frozen=True)
class Item:
    kind: str
    """"connected", "status", "reconnecting" (detail says why) or "failed" (error set)."""
    status: Json | None = None
    error: errors.CliError | None = None
    detail: str = ""


class EventFeed:
    def __init__(self, api: Api, project: str) -> None:
        self.api = api
        self.project = project
        self.items: queue.Queue[Item] = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cadpipe-events", daemon=True)

    def start(self, deadline: float | None = None) -> None:
        """Starts reading and returns once the stream is open (the server answered 200), so that
        what happens next is seen. Raises the API's refusal (401, 404, ...)."""
        self._thread.start()
        item = self.next(deadline)
        if item.kind == "failed":
            assert item.error is not None
            raise item.error

    def next(self, deadline: float | None) -> Item:
        """The next item; WaitTimeout once the deadline (time.monotonic()) passes."""
        while True:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                raise errors.WaitTimeout("gave up waiting: --timeout reached")
            try:
                # short slices keep Ctrl-C responsive on every platform
                return self.items.get(timeout=min(timeout, 0.5) if timeout is not None else 0.5)
            except queue.Empty:
                continue

    def close(self) -> None:
        self._closed.set()

    def _run(self) -> None:
        failures = 0
        connected_once = False
        while not self._closed.is_set():
            try:
                with self.api.events(self.project) as statuses:
                    failures = 0
                    connected_once = True
                    self.items.put(Item("connected"))
                    for status in statuses:
                        if self._closed.is_set():
                            return
                        self.items.put(Item("status", status))
                reason = "the event stream ended"
            except errors.CliError as exc:
                # 401, 404: no point retrying; nor when cadpipe was never reached at all
                if exc.exit_code != errors.UNREACHABLE or not connected_once:
                    self.items.put(Item("failed", error=exc))
                    return
                reason = exc.message
            except Exception as exc:  # handed to the main thread, which shows it
                self.items.put(Item("failed", error=errors.CliError(f"event stream: {exc!r}")))
                return
            pause = RECONNECT_PAUSES[min(failures, len(RECONNECT_PAUSES) - 1)]
            failures += 1
            self.items.put(Item("reconnecting", detail=f"{reason}; reconnecting in {pause:g} s"))
            if self._closed.wait(pause):
                return


StatusCallback = Callable[[Json], None]
NoticeCallback = Callable[[str], None]


def is_version_update(status: Json, version: int) -> bool:
    return not status.get("generation") and int(status.get("version", 0)) == version


def wait_for_version(
    feed: EventFeed,
    api: Api,
    project: str,
    version: int,
    deadline: float | None,
    on_status: StatusCallback,
    on_notice: NoticeCallback,
) -> Json:
    """Follows the feed (already started) until `version` reaches completed, error or timeout;
    returns that status. Every status of the version is handed to on_status."""
    status = status_or_queued(api, project, version)
    on_status(status)
    while status.get("state") not in VERSION_DONE:
        item = feed.next(deadline)
        if item.kind == "failed":
            assert item.error is not None
            raise item.error
        if item.kind == "reconnecting":
            on_notice(item.detail)
        elif item.kind == "connected":
            status = status_or_queued(api, project, version)
            on_status(status)
        elif item.status is not None and is_version_update(item.status, version):
            status = item.status
            on_status(status)
    return status


def status_or_queued(api: Api, project: str, version: int) -> Json:
    """The version's status; "queued" while the watcher has not heard of the upload yet (the
    status service answers 404 for a version it does not know, for a moment after the upload)."""
    try:
        return api.status(project, version)
    except errors.ApiError as exc:
        if exc.http_status != 404 or isinstance(exc, errors.NotSupported):
            raise
        return {"project": project, "version": version, "state": "queued"}


def wait_for_generation(
    feed: EventFeed,
    api: Api,
    project: str,
    generation_id: str,
    deadline: float | None,
    on_progress: Callable[[Json], None],
    on_notice: NoticeCallback,
) -> Json:
    """Follows the feed until the generation succeeds or fails; returns the generation as
    GET .../generations/{id} tells it at the end. on_progress gets each GenerationProgress (the
    first from the generation itself); an update of an earlier round than one already shown
    (the stream and the record cross) is dropped."""
    shown_round = 0

    def show(progress: Json) -> None:
        nonlocal shown_round
        if int(progress.get("round", 0)) < shown_round:
            return
        shown_round = int(progress.get("round", 0))
        on_progress(progress)

    generation = api.generation(project, generation_id)
    show(progress_of(generation))
    while generation.get("state") not in GENERATION_DONE:
        item = feed.next(deadline)
        if item.kind == "failed":
            assert item.error is not None
            raise item.error
        if item.kind == "reconnecting":
            on_notice(item.detail)
        elif item.kind == "connected":
            generation = api.generation(project, generation_id)
            show(progress_of(generation))
        elif item.status is not None:
            progress = item.status.get("generation") or {}
            if progress.get("id") == generation_id:
                show(progress)
                if progress.get("state") in GENERATION_DONE:
                    generation = api.generation(project, generation_id)
                    if generation.get("state") not in GENERATION_DONE:  # the record lags
                        generation = {**generation, "state": progress["state"]}
    return generation


def progress_of(generation: Json) -> Json:
    """A Generation as the GenerationProgress the event stream would carry."""
    rounds: list[Any] = generation.get("rounds", [])
    current = rounds[-1] if rounds else {}
    return {
        "id": generation.get("id", ""),
        "state": generation.get("state", ""),
        "round": generation.get("round", 0),
        "max_rounds": generation.get("max_rounds", 0),
        "version": generation.get("result_version") or current.get("version", 0),
        "message": generation.get("error") or current.get("feedback", ""),
    }
