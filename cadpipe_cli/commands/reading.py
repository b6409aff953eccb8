"""The commands that read: status, watch, versions, projects, script, logs."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.text import Text

from cadpipe_cli import errors
from cadpipe_cli.api import Api, Json
from cadpipe_cli.commands.base import (
    Settings,
    command,
)
from cadpipe_cli.follow import (
    VERSION_DONE,
    EventFeed,
    is_version_update,
)
from cadpipe_cli.render import Output, size, state_text, version_line, when

# -- reading ---------------------------------------------------------------------------------


@click.command()
@click.argument("project")
@click.option(
    "--version", "version", type=click.IntRange(min=1), help="this version (default: latest)"
)
@command()
def status(settings: Settings, out: Output, project: str, version: int | None) -> int:
    """Shows the status of PROJECT's latest version, or of --version N.

    Exits 1 when that version ended in error or timeout, 0 otherwise.

    \b
    Examples:
      cadpipe status demo
      cadpipe status demo --version 3 --json
    """
    with settings.api(out) as api:
        current = api.status(project, version or 0)
    if out.as_json:
        out.json(current)
    else:
        out.line(version_line(current))
        rows = [
            ("uploaded", when(current.get("uploaded_at"))),
            ("finished", when(current.get("finished_at"))),
            ("formats", ", ".join(current.get("formats") or [])),
            ("error", current.get("error", "")),
            ("log", (current.get("log_key") or "").rsplit("/", 1)[-1]),
        ]
        for label, value in rows:
            if value:
                out.line(f"  {label:<9}{value}")
    return errors.FAILED if current.get("state") in ("error", "timeout") else errors.OK


@click.command()
@click.argument("project")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="stop after this long (exit 3); default: until Ctrl-C",
)
@command(streams=True)
def watch(settings: Settings, out: Output, project: str, timeout: float | None) -> int:
    """Shows PROJECT's status, then every change as it happens, until Ctrl-C.

    \b
    Examples:
      cadpipe watch demo
      cadpipe watch demo --json | jq -c '{version, state}'
    """
    deadline = time.monotonic() + timeout if timeout else None
    with settings.api(out) as api:
        feed = EventFeed(api, project)
        feed.start(deadline)
        try:
            with out.activity(f"watching {project}") as activity:
                while True:
                    item = feed.next(deadline)
                    if item.kind == "failed":
                        assert item.error is not None
                        raise item.error
                    if item.kind == "reconnecting":
                        out.notice(item.detail)
                    elif item.status is not None:
                        show_update(out, activity, item.status)
        finally:
            feed.close()


def show_update(out: Output, activity: Any, status: Json) -> None:
    if out.as_json:
        out.json_line(status)
        return
    progress = status.get("generation")
    if progress:
        line = state_text(progress.get("state", ""))
        line = Text(f"generation {progress.get('id', '')} round {progress.get('round', 0)} ") + line
        if progress.get("message"):
            line.append(f": {progress['message']}", style="dim")
        activity.line(line)
        return
    line = version_line(status)
    if status.get("error"):
        line.append(f": {status['error']}", style="red")
    activity.line(line)


@click.command()
@click.argument("project")
@command()
def versions(settings: Settings, out: Output, project: str) -> int:
    """Lists PROJECT's versions, oldest first.

    \b
    Examples:
      cadpipe versions demo
      cadpipe versions demo --json | jq '.[-1].version'
    """
    with settings.api(out) as api:
        items = api.scripts(project)
    if out.as_json:
        out.json(items)
        return errors.OK
    out.table(
        ["version", "uploaded", "size", "sha256", "metadata"],
        [
            [
                str(s.get("version", "")),
                when(s.get("uploaded_at")),
                size(s.get("size_bytes")),
                str(s.get("sha256", ""))[:12],
                " ".join(f"{k}={v}" for k, v in sorted((s.get("metadata") or {}).items())),
            ]
            for s in items
        ],
    )
    return errors.OK


@click.command()
@command()
def projects(settings: Settings, out: Output) -> int:
    """Lists your projects.

    \b
    Examples:
      cadpipe projects
      cadpipe projects --json | jq -r '.[].project'
    """
    with settings.api(out) as api:
        items = api.projects()
    if out.as_json:
        out.json(items)
        return errors.OK
    out.table(
        ["project", "latest", "created", "updated"],
        [
            [
                str(p.get("project", "")),
                f"v{p.get('latest_version', 0)}",
                when(p.get("created_at")),
                when(p.get("updated_at")),
            ]
            for p in items
        ],
    )
    return errors.OK


@click.command()
@click.argument("project")
@click.argument("version", type=click.IntRange(min=1))
@command()
def script(settings: Settings, out: Output, project: str, version: int) -> int:
    """Prints the script of PROJECT's version VERSION.

    \b
    Examples:
      cadpipe script demo 3 > part_v3.py
      diff <(cadpipe script demo 2) <(cadpipe script demo 3)
    """
    with settings.api(out) as api:
        body = api.script(project, version)
    if out.as_json:
        out.json(body)
    else:
        out.raw(str(body.get("content", "")))
    return errors.OK


@click.command()
@click.argument("project")
@click.option(
    "--version", "version", type=click.IntRange(min=1), help="this version (default: latest)"
)
@click.option("--follow", "-f", is_flag=True, help="then print each new version's log as it ends")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="with --follow: stop after this long (exit 3)",
)
@command(streams=True)
def logs(
    settings: Settings,
    out: Output,
    project: str,
    version: int | None,
    follow: bool,
    timeout: float | None,
) -> int:
    """Prints the log of PROJECT's latest version (or of --version N).

    Logs are written when a version ends; --follow waits for each next version to end and
    prints its log, until Ctrl-C.

    \b
    Examples:
      cadpipe logs demo
      cadpipe logs demo --version 2
      cadpipe logs demo --follow
    """
    deadline = time.monotonic() + timeout if timeout else None
    with settings.api(out) as api:
        feed = None
        if follow:
            feed = EventFeed(api, project)
            feed.start(deadline)
        try:
            wanted = version or int(api.status(project).get("version", 0))
            printed = set()
            if wanted:
                print_logs(out, api, project, wanted)
                printed.add(wanted)
            if feed is None:
                return errors.OK
            while True:
                item = feed.next(deadline)
                if item.kind == "failed":
                    assert item.error is not None
                    raise item.error
                if item.kind == "reconnecting":
                    out.notice(item.detail)
                    continue
                status = item.status or {}
                number = int(status.get("version", 0))
                if (
                    is_version_update(status, number)
                    and status.get("state") in VERSION_DONE
                    and number not in printed
                ):
                    print_logs(out, api, project, number)
                    printed.add(number)
        finally:
            if feed is not None:
                feed.close()


def print_logs(out: Output, api: Api, project: str, version: int) -> None:
    files = api.logs(project, version)
    if not files and not out.as_json:
        out.notice(f"v{version}: no log yet (logs are written when a version ends)")
    for log in sorted(files, key=lambda f: f.get("written_at", "")):
        body = api.log(project, str(log["name"]))
        if out.as_json:
            out.json_line(body)
            continue
        if out.out.is_terminal:
            out.line(f"==> {log['name']} <==", "bold")
        else:
            out.line(f"==> {log['name']} <==")
        out.raw(str(body.get("content", "")))
