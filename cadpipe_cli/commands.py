"""The commands: arguments (click) -> API calls (api.py) -> what is shown (render.py).

Each command returns its exit code (errors.py); a CliError raised anywhere ends the command with
its message and code, Ctrl-C with 130.
"""

from __future__ import annotations

import functools
import pathlib
import sys
import time
import uuid
import webbrowser
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.text import Text

from cadpipe_cli import config as config_file
from cadpipe_cli import errors
from cadpipe_cli.api import Api, Json, fetch
from cadpipe_cli.follow import (
    GENERATION_DONE,
    VERSION_DONE,
    EventFeed,
    is_version_update,
    wait_for_generation,
    wait_for_version,
)
from cadpipe_cli.render import Output, Stopwatch, seconds, size, state_text, version_line, when

FORMATS = ("fcstd", "step", "stl", "obj", "iges")
DEFAULT_TIMEOUT = 600.0
LOG_TAIL_LINES = 20

F = TypeVar("F", bound=Callable[..., Any])


class Settings:
    """The group's options, handed to every command."""

    def __init__(self, url: str | None, token: str | None) -> None:
        self.url = url
        self.token = token

    def config(self) -> config_file.Config:
        try:
            return config_file.resolve(self.url, self.token)
        except config_file.ConfigError as exc:
            raise errors.CliError(str(exc), errors.USAGE) from exc

    def api(self, out: Output) -> Api:
        cfg = self.config()
        if not cfg.token:
            raise errors.CliError(
                "no API token",
                errors.AUTH,
                hint="run `cadpipe login`, or set CADPIPE_TOKEN (`make run` prints one)",
            )
        return Api(
            cfg,
            on_retry=lambda wait, msg: out.notice(f"rate limited ({msg}); retrying in {wait:g} s"),
        )


def command(*, streams: bool = False) -> Callable[[F], F]:
    """Adds --json and runs the command: its return value is the exit code; CliError and Ctrl-C
    end it with their message and code."""

    def decorate(fn: F) -> F:
        help_json = (
            "JSON lines on stdout, one per update, for scripts"
            if streams
            else "one JSON document on stdout, for scripts"
        )

        @click.option("--json", "as_json", is_flag=True, help=help_json)
        @click.pass_obj
        @functools.wraps(fn)
        def run(settings: Settings, *args: Any, as_json: bool, **kwargs: Any) -> int:
            out = Output(as_json, streams=streams)
            try:
                return int(fn(settings, out, *args, **kwargs) or 0)
            except errors.CliError as exc:
                out.error(exc)
                return exc.exit_code
            except KeyboardInterrupt:
                out.notice("interrupted")
                return errors.INTERRUPTED

        return run  # type: ignore[return-value]

    return decorate


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Exit codes: 0 completed, 1 failed, 2 usage, 3 timeout, 4 authentication, "
    "5 cadpipe unreachable. Full reference: docs/cli.md.",
)
@click.option("--url", metavar="URL", help="cadpipe's address (else CADPIPE_URL, else the config)")
@click.option(
    "--token", metavar="TOKEN", help="API token (else CADPIPE_TOKEN, else the config file)"
)
@click.version_option("0.1.0", prog_name="cadpipe")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None) -> None:
    """cadpipe from the terminal: submit FreeCAD scripts, follow them, download the CAD files.

    \b
    Examples:
      cadpipe login
      cadpipe submit part.py --project demo --wait --download step,stl
      cadpipe status demo
      cadpipe download demo --format step -o out/
    """
    ctx.obj = Settings(url, token)


# -- login / open ------------------------------------------------------------------------------


@cli.command(epilog=f"Config file: {config_file.config_path()}")
@click.option("--url", "new_url", metavar="URL", help="cadpipe's address")
@click.option("--token", "new_token", metavar="TOKEN", help="API token (prompted when absent)")
@click.option("--no-verify", is_flag=True, help="save without asking the API")
@command()
def login(
    settings: Settings, out: Output, new_url: str | None, new_token: str | None, no_verify: bool
) -> int:
    """Saves cadpipe's URL and an API token in your config directory.

    The file (its path is below) is readable by you only. CADPIPE_URL and CADPIPE_TOKEN
    override it.

    \b
    Examples:
      cadpipe login                                   # asks for both
      cadpipe login --url https://cad.example.com --token cpt_...
      echo "$TOKEN" | cadpipe login --url http://127.0.0.1:8080 --token -
    """
    current = settings.config()
    interactive = sys.stdin.isatty()
    url: str = new_url or settings.url or ""
    if not url:
        url = click.prompt("cadpipe URL", default=current.url) if interactive else current.url
    token: str = new_token or settings.token or ""
    if token == "-":
        token = sys.stdin.readline().strip()
    if not token:
        if not interactive:
            raise click.UsageError("no token: pass --token TOKEN, or --token - to read stdin")
        token = click.prompt("API token", hide_input=True)
    cfg = config_file.Config(url=url.rstrip("/"), token=token.strip())
    if not no_verify:
        with Api(cfg) as api:
            api.check_token()
    try:
        path = config_file.save(cfg)
    except config_file.ConfigError as exc:
        raise errors.CliError(str(exc)) from exc
    if out.as_json:
        out.json({"url": cfg.url, "config": str(path), "verified": not no_verify})
    else:
        out.line(f"logged in to {cfg.url}; saved to {path}")
    return errors.OK


@cli.command("open")
@click.argument("project")
@click.option("--browser", is_flag=True, help="open it in the web browser too")
@command()
def open_(settings: Settings, out: Output, project: str, browser: bool) -> int:
    """Prints the web app's address of PROJECT (and opens it with --browser).

    \b
    Examples:
      cadpipe open demo
      cadpipe open demo --browser
    """
    url = f"{settings.config().url.rstrip('/')}/#/projects/{project}"
    if out.as_json:
        out.json({"url": url})
    else:
        out.line(url)
    if browser and not webbrowser.open(url):
        raise errors.CliError("no web browser found; open the address above by hand")
    return errors.OK


# -- submit ----------------------------------------------------------------------------------


def parse_formats(value: str | None) -> list[str]:
    if not value:
        return []
    formats = [f.strip().lower().lstrip(".") for f in value.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise click.BadParameter(
            f"unknown format {', '.join(unknown)}; choose from {', '.join(FORMATS)}"
        )
    return list(dict.fromkeys(formats))


def formats_option(required: bool) -> Callable[[F], F]:
    return click.option(
        "--download" if not required else "--format",
        "formats",
        metavar="FORMATS",
        required=required,
        callback=lambda ctx, param, value: parse_formats(value),
        help=f"comma-separated formats to download: {','.join(FORMATS)}",
    )


def timeout_option(fn: F) -> F:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        metavar="SECONDS",
        help="give up waiting after this long (exit 3)",
    )(fn)


def output_dir_option(fn: F) -> F:
    return click.option(
        "-o",
        "--output-dir",
        type=click.Path(file_okay=False, path_type=pathlib.Path),
        default=pathlib.Path("."),
        show_default=True,
        help="where to save downloaded files",
    )(fn)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path))
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
    """Uploads FILE as PROJECT's next version.

    With --wait, follows it live until it is completed (exit 0), failed (exit 1, with the error
    line and the end of the log) or timed out (exit 3). --download implies --wait and saves the
    formats once completed, their sha256 checked.

    \b
    Examples:
      cadpipe submit part.py --project demo
      cadpipe submit part.py --project demo --wait
      cadpipe submit part.py -p demo --download step,stl -o out/
      cadpipe submit part.py -p demo --wait --json | jq .status.state
    """
    script = file.read_bytes()
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
        out.line(f"uploaded {file.name} as {project} v{version}{replayed}")
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


@cli.command()
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


# -- reading ---------------------------------------------------------------------------------


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.command()
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
