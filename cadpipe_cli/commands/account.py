"""`cadpipe login` and `cadpipe open`: where cadpipe is, and its web app."""

from __future__ import annotations

import sys
import webbrowser

import click

from cadpipe_cli import config as config_file
from cadpipe_cli import errors
from cadpipe_cli.api import Api
from cadpipe_cli.commands.base import (
    Settings,
    command,
)
from cadpipe_cli.render import Output

# -- login / open ------------------------------------------------------------------------------


@click.command(epilog=f"Config file: {config_file.config_path()}")
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


@click.command("open")
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
