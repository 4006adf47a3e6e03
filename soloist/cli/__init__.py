"""The `soloist` command line. Each command is a module of this package."""

from __future__ import annotations

import sys

import click

from ..errors import SoloistError
from ..worker import constants as c
from .dead_letters import dead_letters
from .demo import demo
from .enqueue import enqueue
from .revoke import revoke
from .status import status
from .worker import worker


@click.group()
@click.version_option(package_name="soloist")
def cli() -> None:
    """Soloist: a task queue built around the inline (solo) worker."""


for command in (worker, enqueue, status, dead_letters, revoke, demo):
    cli.add_command(command)


def main() -> None:
    """Entry point: Soloist errors become one line on stderr and a non-zero exit."""
    try:
        cli.main(standalone_mode=True)
    except SoloistError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(c.EXIT_CONFIG)
