"""The started record (started/{p}/{p}_v{N}.json): who took version N first.

Two parties may take a queued version, and exactly one of them must win:

* a worker, about to run the script: `started` (when, which worker, which delivery);
* the watcher, when the version waited longer than the queue limit and no worker started it:
  `expired`. A version so ended is never run afterwards.

Both write the record with If-None-Match: *, so S3 decides who was first, as it decides version
numbers; the loser reads the record and follows it (a worker that finds `expired` acks its
message without running; a watcher that finds `started` lets the version run). A worker of the
older contract writes no record: its versions stay `queued` until their marker or log lands.

Pure: building and parsing the record, no I/O.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Literal

SCHEMA = "cadpipe.started/1"
StartedState = Literal["started", "expired"]
CONTENT_TYPE = "application/json"


class InvalidStartedRecord(ValueError):
    """A started record that is not ours (it is treated as a start: something took it)."""


@dataclass(frozen=True)
class StartedRecord:
    state: StartedState
    at: dt.datetime
    worker: str = ""
    attempt: int = 0
    reason: str = ""
    """For `expired`: why the version was never started (for people)."""

    @property
    def expired(self) -> bool:
        return self.state == "expired"

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "schema": SCHEMA,
                "state": self.state,
                "at": self.at.astimezone(dt.UTC).isoformat(timespec="milliseconds"),
                "worker": self.worker,
                "attempt": self.attempt,
                "reason": self.reason,
            },
            sort_keys=True,
        ).encode()


def started(at: dt.datetime, *, worker: str, attempt: int) -> StartedRecord:
    return StartedRecord("started", at, worker=worker, attempt=attempt)


def expired(at: dt.datetime, *, waited_seconds: float, limit_seconds: float) -> StartedRecord:
    return StartedRecord(
        "expired",
        at,
        reason=f"never started: waited {waited_seconds:.0f} s in the queue "
        f"(the limit is {limit_seconds:g} s)",
    )


def parse(body: bytes, *, written_at: dt.datetime | None = None) -> StartedRecord:
    """The record; a body that is not ours counts as a start at written_at (someone took the
    version; only our own `expired` stops a worker)."""
    try:
        data = json.loads(body)
        if not isinstance(data, dict) or data.get("state") not in ("started", "expired"):
            raise InvalidStartedRecord("not a started record")
        at = dt.datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00"))
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
        return StartedRecord(
            state=data["state"],
            at=at,
            worker=str(data.get("worker", "")),
            attempt=int(data.get("attempt", 0)),
            reason=str(data.get("reason", "")),
        )
    except (ValueError, KeyError, TypeError):
        return StartedRecord("started", written_at or dt.datetime.now(dt.UTC))
