"""datetime <-> google.protobuf.Timestamp, written once for every service.

An unset Timestamp (0 s, 0 ns) stands for "no time" in our messages, as an absent datetime
(None) does in our domain objects.
"""

from __future__ import annotations

import datetime as dt
from typing import overload

from google.protobuf.timestamp_pb2 import Timestamp


@overload
def to_timestamp(value: dt.datetime) -> Timestamp: ...
@overload
def to_timestamp(value: None) -> None: ...
def to_timestamp(value: dt.datetime | None) -> Timestamp | None:
    """A Timestamp of an aware datetime (any zone) or of a naive one taken as UTC; None stays
    None, which leaves a message field unset."""
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def to_datetime(stamp: Timestamp) -> dt.datetime | None:
    """The UTC datetime of a Timestamp; None for an unset one."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.ToDatetime(tzinfo=dt.UTC)
