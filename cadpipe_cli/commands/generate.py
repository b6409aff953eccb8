"""`cadpipe generate`: text to CAD, each round shown."""

from __future__ import annotations

import pathlib
import time
import uuid
from typing import Any

import click
from rich.text import Text

from cadpipe_cli import errors
from cadpipe_cli.api import Api, Json
from cadpipe_cli.commands.base import (
    Settings,
    command,
    formats_option,
    output_dir_option,
    timeout_option,
)
from cadpipe_cli.commands.submit import download_formats, open_feed_of_new_project
from cadpipe_cli.follow import (
    GENERATION_DONE,
    EventFeed,
    wait_for_generation,
)
from cadpipe_cli.render import Output, Stopwatch, seconds, state_text

# -- generate --------------------------------------------------------------------------------


def parse_expect(values: tuple[str, ...]) -> Json:
    """`bbox=40x20x10`, `volume=7200`, `solids=1`, `tolerance=0.5` (mm), `volume-tolerance=0.02`
    -> ExpectedGeometry JSON."""
    expect: Json = {}
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        try:
            if not sep:
                raise ValueError
            if key == "bbox":
                x, y, z = (float(v) for v in value.lower().split("x"))
                expect["bbox"] = {"x_mm": x, "y_mm": y, "z_mm": z}
            elif key == "volume":
                expect["volume_mm3"] = float(value)
            elif key == "solids":
                expect["solids"] = int(value)
            elif key == "tolerance":
                expect["bbox_tolerance_mm"] = float(value)
            elif key == "volume-tolerance":
                expect["volume_tolerance"] = float(value)
            else:
                raise click.BadParameter(
                    f"unknown key {key!r} in {item!r}; use bbox, volume, solids, tolerance or "
                    "volume-tolerance"
                )
        except ValueError as exc:
            raise click.BadParameter(
                f"{item!r}: expected bbox=XxYxZ, volume=MM3, solids=N, tolerance=MM or "
                "volume-tolerance=FRACTION"
            ) from exc
    return expect


@click.command()
@click.argument("prompt")
@click.option("-p", "--project", required=True, help="the project the versions go to")
@click.option(
    "--expect",
    "expect_items",
    multiple=True,
    metavar="KEY=VALUE",
    callback=lambda ctx, param, value: parse_expect(value),
    help="geometry the part must have: bbox=XxYxZ, volume=MM3, solids=N, tolerance=MM, "
    "volume-tolerance=FRACTION (repeatable)",
)
@click.option("--max-rounds", type=click.IntRange(1, 5), help="attempts, 1 to 5 (default 3)")
@click.option("--parent-version", type=click.IntRange(min=1), help="edit this version's script")
@click.option("--wait", is_flag=True, help="follow every round until succeeded or failed")
@formats_option(required=False)
@output_dir_option
@timeout_option
@command()
def generate(
    settings: Settings,
    out: Output,
    prompt: str,
    project: str,
    expect_items: Json,
    max_rounds: int | None,
    parent_version: int | None,
    wait: bool,
    formats: list[str],
    output_dir: pathlib.Path,
    timeout: float,
) -> int:
    """Text to CAD: asks cadpipe to write, run and check a script for PROMPT.

    Every attempt becomes an ordinary version of PROJECT. With --wait, shows each round
    (generating, verifying, repairing) until it succeeded (exit 0) or failed (exit 1).

    \b
    Examples:
      cadpipe generate "a 40 x 20 x 10 mm block with a 6 mm hole" -p demo --wait
      cadpipe generate "a bracket" -p demo --expect bbox=60x40x5 --expect solids=1 --wait
      cadpipe generate "make the hole 8 mm" -p demo --parent-version 3 --download step
    """
    wait = wait or bool(formats)
    deadline = time.monotonic() + timeout
    request: Json = {"prompt": prompt}
    if expect_items:
        request["expect"] = expect_items
    if max_rounds:
        request["max_rounds"] = max_rounds
    if parent_version:
        request["parent_version"] = parent_version
    with settings.api(out) as api:
        feed = None
        if wait:
            feed = EventFeed(api, project)
            try:
                feed.start(deadline)
            except errors.ApiError as exc:
                if exc.http_status != 404:
                    raise
                feed = None
        try:
            generation = api.generate(project, request, idempotency_key=uuid.uuid4().hex)
        except BaseException:
            if feed is not None:
                feed.close()
            raise
        generation_id = str(generation["id"])
        out.line(f"generation {generation_id} started for {project}")
        if not wait:
            if out.as_json:
                out.json({"generation": generation})
            return errors.OK
        if feed is None:
            feed = open_feed_of_new_project(api, project, deadline)
        watch = Stopwatch()
        try:
            final = follow_generation(out, api, feed, project, generation_id, deadline)
        finally:
            feed.close()
        state = final.get("state", "")
        result: Json = {"generation": final}
        version = int(final.get("result_version") or 0)
        if state == "succeeded":
            out.line(f"✓ succeeded in {seconds(watch.elapsed())}: v{version}", "bold green")
            code = errors.OK
            if formats and version:
                result["downloads"] = download_formats(
                    out, api, project, version, formats, output_dir
                )
        else:
            out.line(f"✗ failed after {seconds(watch.elapsed())}", "bold red")
            if final.get("error"):
                out.line(f"error: {final['error']}", "red")
            code = errors.FAILED
        if out.as_json:
            out.json(result)
        return code


def follow_generation(
    out: Output, api: Api, feed: EventFeed, project: str, generation_id: str, deadline: float
) -> Json:
    seen: set[tuple[Any, ...]] = set()
    with out.activity("generating") as activity:

        def on_progress(progress: Json) -> None:
            state = progress.get("state", "")
            rnd = int(progress.get("round", 0))
            of = int(progress.get("max_rounds", 0))
            version = int(progress.get("version", 0))
            label = f"round {rnd}/{of}" if of else f"round {rnd}"
            activity.update(f"{label} {state}" + (f" (v{version})" if version else ""))
            key = (state, rnd, version, progress.get("message", ""))
            if key in seen or state in GENERATION_DONE:
                return
            seen.add(key)
            line = state_text(state)
            line = Text(f"{label} ") + line
            if version:
                line.append(f" v{version}")
            if progress.get("message"):
                line.append(f": {progress['message']}", style="dim")
            activity.line(line)

        try:
            return wait_for_generation(
                feed, api, project, generation_id, deadline, on_progress, out.notice
            )
        except errors.WaitTimeout as exc:
            raise errors.WaitTimeout(
                f"generation {generation_id} not finished within the --timeout; it goes on on "
                f"the server (`cadpipe watch {project}`)"
            ) from exc
