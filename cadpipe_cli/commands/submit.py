"""`cadpipe submit` and `cadpipe download`: a script in, its version followed live, CAD files
out."""

from __future__ import annotations

import pathlib
import sys
import time

import click

from cadpipe_cli import errors
from cadpipe_cli.api import Api, Json, fetch
from cadpipe_cli.commands.base import (
    Settings,
    command,
    formats_option,
    output_dir_option,
    timeout_option,
)
from cadpipe_cli.follow import (
    VERSION_DONE,
    EventFeed,
    wait_for_version,
)
from cadpipe_cli.render import Output, Stopwatch, seconds, size, version_line

LOG_TAIL_LINES = 20
"""Lines of a failed version's log shown under its error."""


@click.command()
@click.argument(
    "file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=pathlib.Path)
)
@click.option("-p", "--project", required=True, help="the project (created by its first upload)")
@click.option("--wait", is_flag=True, help="follow it until completed, error or timeout")
@formats_option(required=False)
@output_dir_option
@timeout_option
@click.option("--idempotency-key", metavar="KEY", help="same key, same version (default: new)")
@command()
def submit(
    settings: Settings,
    out: Output,
    file: pathlib.Path,
    project: str,
    wait: bool,
    formats: list[str],
    output_dir: pathlib.Path,
    timeout: float,
    idempotency_key: str | None,
) -> int:
    """Uploads FILE (`-`: standard input) as PROJECT's next version.

    With --wait, follows it live until it is completed (exit 0), failed (exit 1, with the error
    line and the end of the log) or timed out (exit 3). --download implies --wait and saves the
    formats once completed, their sha256 checked.

    \b
    Examples:
      cadpipe submit part.py --project demo
      cadpipe submit part.py --project demo --wait
      cadpipe submit part.py -p demo --download step,stl -o out/
      cadpipe submit part.py -p demo --wait --json | jq .status.state
      write_part | cadpipe submit - -p demo --wait
    """
    from_stdin = str(file) == "-"
    script = sys.stdin.buffer.read() if from_stdin else file.read_bytes()
    label = "the script from stdin" if from_stdin else file.name
    wait = wait or bool(formats)
    deadline = time.monotonic() + timeout
    with settings.api(out) as api:
        feed = None
        if wait:  # listen before uploading, so no change goes unseen
            feed = EventFeed(api, project)
            try:
                feed.start(deadline)
            except errors.ApiError as exc:
                if exc.http_status != 404:
                    raise
                feed = None  # a new project: it exists once the upload below creates it
        try:
            uploaded = api.upload(project, script, idempotency_key=idempotency_key or "")
        except BaseException:
            if feed is not None:
                feed.close()
            raise
        version = int(uploaded["script"]["version"])
        replayed = " (already uploaded with this key)" if uploaded.get("replayed") else ""
        out.line(f"uploaded {label} as {project} v{version}{replayed}")
        result: Json = {"upload": uploaded}
        if not wait:
            if out.as_json:
                out.json(result)
            return errors.OK
        if feed is None:
            feed = open_feed_of_new_project(api, project, deadline)
        try:
            final = follow_version(out, api, feed, project, version, deadline)
        finally:
            feed.close()
        result["status"] = final
        code = outcome(out, api, project, final)
        if code == errors.OK and formats:
            result["downloads"] = download_formats(out, api, project, version, formats, output_dir)
        if out.as_json:
            out.json(result)
        return code


NEW_PROJECT_GRACE = 10.0
"""How long the event stream of a project just created may answer 404: the status service
learns of a first upload from its event, a moment after the upload itself."""


def open_feed_of_new_project(api: Api, project: str, deadline: float) -> EventFeed:
    give_up = min(deadline, time.monotonic() + NEW_PROJECT_GRACE)
    pause = 0.1
    while True:
        feed = EventFeed(api, project)
        try:
            feed.start(deadline)
            return feed
        except errors.ApiError as exc:
            feed.close()
            if exc.http_status != 404 or isinstance(exc, errors.NotSupported):
                raise
            if time.monotonic() + pause > give_up:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def follow_version(
    out: Output, api: Api, feed: EventFeed, project: str, version: int, deadline: float
) -> Json:
    watch = Stopwatch()
    shown: list[str] = []

    with out.activity(f"v{version} waiting") as activity:

        def on_status(status: Json) -> None:
            state = status.get("state", "")
            activity.update(f"v{version} {state}")
            if not shown or shown[-1] != state:
                shown.append(state)
                if state not in VERSION_DONE:  # the outcome is shown once, after the spinner
                    activity.line(version_line(status))

        def on_notice(text: str) -> None:
            out.notice(text)

        try:
            final = wait_for_version(feed, api, project, version, deadline, on_status, on_notice)
        except errors.WaitTimeout as exc:
            raise errors.WaitTimeout(
                f"v{version} still {shown[-1] if shown else 'pending'} after "
                f"{seconds(watch.elapsed())}; it goes on on the server "
                f"(`cadpipe watch {project}`)"
            ) from exc
    out.line(version_line(final, watch.elapsed()))
    return final


def outcome(out: Output, api: Api, project: str, status: Json) -> int:
    """Shows why a finished version failed (the error line, the end of its log); its exit
    code."""
    state = status.get("state")
    if state == "completed":
        return errors.OK
    if status.get("error"):
        out.line(f"error: {status['error']}", "red")
    tail = log_tail(api, project, status)
    if tail:
        out.line("--- end of the log " + "-" * 40, "dim")
        for line in tail:
            out.line(line)
    return errors.FAILED  # a version that timed out on the server failed; exit 3 is our wait


def log_tail(api: Api, project: str, status: Json, lines: int = LOG_TAIL_LINES) -> list[str]:
    name = (status.get("log_key") or "").rsplit("/", 1)[-1]
    try:
        if not name:
            logs = api.logs(project, int(status.get("version", 0)))
            errors_first = sorted(logs, key=lambda log: log.get("level") != "error")
            name = errors_first[0]["name"] if errors_first else ""
        if not name:
            return []
        content = str(api.log(project, name).get("content", ""))
    except errors.ApiError:
        return []  # the outcome is known; a missing log must not hide it
    return content.rstrip("\n").splitlines()[-lines:]


def download_formats(
    out: Output,
    api: Api,
    project: str,
    version: int,
    formats: list[str],
    output_dir: pathlib.Path,
) -> list[Json]:
    saved: list[Json] = []
    for fmt in formats:
        link = api.download_url(project, fmt, version)
        file = link.get("file") or {}
        name = pathlib.Path(file.get("name") or f"{project}_v{version}.{fmt}").name
        dest = output_dir / name
        expected = int(file.get("size_bytes") or 0)
        with out.transfer(name, expected) as advance:
            digest = fetch(link["url"], dest, sha256=file.get("sha256", ""), on_bytes=advance)
        got = dest.stat().st_size
        verified = bool(file.get("sha256"))
        out.line(f"saved {dest} ({size(got)}, sha256 {'verified' if verified else 'not reported'})")
        saved.append(
            {
                "format": fmt,
                "path": str(dest),
                "size_bytes": got,
                "sha256": digest,
                "verified": verified,
                "version": int(link.get("version") or version),
            }
        )
    return saved


@click.command()
@click.argument("project")
@formats_option(required=True)
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    help="this version (default: the latest completed)",
)
@output_dir_option
@command()
def download(
    settings: Settings,
    out: Output,
    project: str,
    formats: list[str],
    version: int | None,
    output_dir: pathlib.Path,
) -> int:
    """Downloads PROJECT's CAD files, checking each one's sha256.

    \b
    Examples:
      cadpipe download demo --format step
      cadpipe download demo --format step,stl --version 3 -o out/
    """
    with settings.api(out) as api:
        saved = download_formats(out, api, project, version or 0, formats, output_dir)
    if out.as_json:
        out.json(saved)
    return errors.OK
