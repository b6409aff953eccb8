"""Waiting for something to become true, the one way every test folder does it."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def wait_until(
    condition: Callable[[], Any | Awaitable[Any]],
    *,
    within: float = 10.0,
    what: str = "",
    every: float = 0.02,
) -> Any:
    """Polls `condition` (plain or async) until it returns something truthy, and returns that;
    AssertionError naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {within} s: {what or condition}")
        await asyncio.sleep(every)


def wait_until_blocking(
    condition: Callable[[], Any], *, within: float = 10.0, what: str = "", every: float = 0.02
) -> Any:
    """wait_until for threads and synchronous tests."""
    deadline = time.monotonic() + within
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {within} s: {what or condition}")
        time.sleep(every)
    return result
