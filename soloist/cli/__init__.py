"""The `soloist` command line. Each command is a module of this package, imported only when
that command runs, so a worker does not pay for the operator commands' imports (rich)."""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import SoloistError
from ..worker.constants import EXIT_CONFIG
from .common import APP_HELP

#: Command name -> the module defining it (the function has the command's name).
COMMANDS = {
    "worker": "worker",
    "enqueue": "enqueue",
    "status": "status",
    "dead-letters": "dead_letters",
    "revoke": "revoke",
    "result": "result",
    "dashboard": "dashboard",
    "schedules": "schedules",
    "demo": "demo",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        # Here: a command's module is imported when it runs, so one command never pays
        # for another's libraries, nor needs another's optional extra (the dashboard's).
        command: click.Command = getattr(importlib.import_module(f"{__name__}.{module}"), module)
        return command


@click.group(cls=_LazyGroup)
@click.option(
    "-A", "--app", "app_path", default=None, metavar="MODULE:APP", envvar="SOLOIST_APP",
    help="The app, for every command (each also takes -A), " + APP_HELP,
)  # fmt: skip
@click.version_option(package_name="soloist")
def cli(app_path: str | None) -> None:
    """Soloist: a task queue built around the inline (solo) worker.

    Exit codes: 0 success; 1 an error Soloist reports in one line (bad configuration, a
    broker or result store it cannot use); 2 a usage error (a bad option or argument, an
    -A that cannot be loaded). `worker` and `result` add their own (see their --help)."""


def main() -> None:
    """Entry point: Soloist errors become one line on stderr and a non-zero exit."""
    try:
        cli.main(standalone_mode=True)
    except SoloistError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
