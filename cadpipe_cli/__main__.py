"""`cadpipe`: the console script (pyproject.toml [project.scripts]) and `python -m cadpipe_cli`."""

from __future__ import annotations

import os
import signal
import sys

import click

from cadpipe_cli import errors
from cadpipe_cli.commands import cli


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="cadpipe", standalone_mode=False)
    except click.exceptions.Abort:  # Ctrl-C or end of input at a prompt
        sys.stderr.write("\ninterrupted\n")
        code = errors.INTERRUPTED
    except click.ClickException as exc:  # usage errors: exit 2
        exc.show()
        code = exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        code = errors.INTERRUPTED
    except BrokenPipeError:
        # `cadpipe logs demo | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = errors.OK if os.name != "posix" else 128 + signal.SIGPIPE
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
