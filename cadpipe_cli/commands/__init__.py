"""The `cadpipe` command group; each command lives in the module of its job."""

from __future__ import annotations

import click

from cadpipe_cli.commands import account, generate, reading, submit
from cadpipe_cli.commands.base import Settings


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


for _command in (
    account.login,
    submit.submit,
    generate.generate,
    reading.status,
    reading.watch,
    reading.versions,
    reading.projects,
    reading.script,
    reading.logs,
    submit.download,
    account.open_,
):
    cli.add_command(_command)
