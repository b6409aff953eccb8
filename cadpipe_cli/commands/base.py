"""What every command shares: the group's settings, the runner that turns errors into exit
codes, common options.

The commands: arguments (click) -> API calls (api.py) -> what is shown (render.py).

Each command returns its exit code (errors.py); a CliError raised anywhere ends the command with
its message and code, Ctrl-C with 130.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Callable
from typing import Any, TypeVar

import click

from cadpipe_cli import config as config_file
from cadpipe_cli import errors
from cadpipe_cli.api import Api
from cadpipe_cli.render import Output

FORMATS = ("fcstd", "step", "stl", "obj", "iges")
DEFAULT_TIMEOUT = 600.0

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
