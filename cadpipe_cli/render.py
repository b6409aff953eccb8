"""What the user sees, in one of three modes:

- a terminal: colour, a spinner line while something runs, progress bars for bytes;
- not a terminal (a pipe, a file, CI): the same lines in plain text, no colour, no spinner,
  no control codes, never wrapped;
- --json: one JSON document on stdout at the end (a JSON line per update for streams), nothing
  else on stdout; errors are JSON too ({"error": {...}}), and their message also goes to
  stderr.

Messages about the command itself (errors, retries, notices) go to stderr; results to stdout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from cadpipe_cli.errors import CliError

STATE_STYLE = {
    "completed": "bold green",
    "succeeded": "bold green",
    "error": "bold red",
    "failed": "bold red",
    "timeout": "bold yellow",
    "processing": "cyan",
    "queued": "cyan",
    "generating": "cyan",
    "verifying": "cyan",
    "repairing": "magenta",
}
MARK = {"completed": "✓", "succeeded": "✓", "error": "✗", "failed": "✗", "timeout": "⏱"}


class Output:
    def __init__(self, as_json: bool = False, *, streams: bool = False) -> None:
        self.as_json = as_json
        self.streams = streams
        """--json prints JSON lines (errors too), not one document."""
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.live = self.out.is_terminal and not as_json
        """Spinner and progress bars: only for a person at a terminal."""

    # -- plain lines -------------------------------------------------------------------------

    def line(self, text: str | Text = "", style: str = "") -> None:
        """A line of the result (stdout); silent in --json mode."""
        if self.as_json:
            return
        if self.out.is_terminal:
            self.out.print(text, style=style or None)
        else:
            sys.stdout.write(str(text) + "\n")
            sys.stdout.flush()

    def notice(self, text: str) -> None:
        """About the command itself (stderr): retries, reconnections."""
        if self.err.is_terminal:
            self.err.print(text, style="yellow")
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def raw(self, text: str) -> None:
        """Data the user asked for (a script, a log), byte for byte, in every mode but --json."""
        sys.stdout.write(text)
        if text and not text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()

    def json(self, document: Any) -> None:
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False))
        sys.stdout.write("\n")
        sys.stdout.flush()

    def json_line(self, document: Any) -> None:
        sys.stdout.write(json.dumps(document, sort_keys=True, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def error(self, exc: CliError) -> None:
        message = f"error: {exc.message}"
        if self.err.is_terminal:
            self.err.print(Text(message, style="bold red"))
            if exc.hint:
                self.err.print(Text(f"hint: {exc.hint}", style="dim"))
        else:
            sys.stderr.write(message + "\n" + (f"hint: {exc.hint}\n" if exc.hint else ""))
            sys.stderr.flush()
        if self.as_json:
            (self.json_line if self.streams else self.json)({"error": exc.as_json()})

    def table(self, columns: list[str], rows: list[list[str]]) -> None:
        if self.as_json:
            return
        if self.out.is_terminal:
            table = Table(*columns, box=None, pad_edge=False, header_style="bold")
            for row in rows:
                table.add_row(*row)
            self.out.print(table)
        else:
            sys.stdout.write("\t".join(columns) + "\n")
            for row in rows:
                sys.stdout.write("\t".join(row) + "\n")
            sys.stdout.flush()

    # -- live --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def activity(self, description: str) -> Iterator[Activity]:
        """A spinner line with the elapsed time on a terminal; nothing otherwise. Lines printed
        through the Activity appear above it."""
        if not self.live:
            yield Activity(self, None, None)
            return
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.out,
            transient=True,
        )
        with progress:
            task = progress.add_task(description, total=None)
            yield Activity(self, progress, task)

    @contextlib.contextmanager
    def transfer(self, name: str, size: int) -> Iterator[Any]:
        """A progress bar of bytes on a terminal; yields the callback taking each chunk's
        size."""
        if not self.live:
            yield lambda n: None
            return
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=self.out,
            transient=True,
        )
        with progress:
            task = progress.add_task(name, total=size or None)
            yield lambda n: progress.advance(task, n)


class Activity:
    def __init__(self, output: Output, progress: Progress | None, task: Any) -> None:
        self.output = output
        self.progress = progress
        self.task = task

    def update(self, description: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=description)

    def line(self, text: str | Text, style: str = "") -> None:
        if self.progress is not None:
            self.progress.console.print(text, style=style or None)
        else:
            self.output.line(text, style)


# -- formatting ------------------------------------------------------------------------------


def state_text(state: str) -> Text:
    return Text(state or "unknown", style=STATE_STYLE.get(state, ""))


def version_line(status: dict[str, Any], elapsed: float | None = None) -> Text:
    """`v3 completed in 8.2 s (fcstd, step, stl)` / `v3 processing`."""
    state = status.get("state", "")
    text = Text()
    if state in MARK:
        text.append(MARK[state] + " ", style=STATE_STYLE.get(state, ""))
    version = int(status.get("version", 0))
    if version:
        text.append(f"v{version} ")
    text.append_text(state_text(state))
    duration = status.get("duration_seconds") or elapsed
    if state in MARK and duration:
        text.append(f" in {seconds(float(duration))}")
    formats = status.get("formats") or []
    if formats and state == "completed":
        text.append(f" ({', '.join(formats)})", style="dim")
    return text


def seconds(value: float) -> str:
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest:02d} s"


def size(n: int | str | None) -> str:
    value = float(n or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def when(timestamp: str | None) -> str:
    """An RFC 3339 timestamp as local time, to the second ("" when absent)."""
    if not timestamp:
        return ""
    try:
        parsed = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    return parsed.astimezone().strftime("%Y-%m-%d %H:%M:%S")


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started
