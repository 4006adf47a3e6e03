"""`soloist revoke`: cancel task calls by id."""

from __future__ import annotations

import sys

import click

from .common import app_option, load_app


@click.command()
@app_option
@click.argument("task_ids", nargs=-1, required=True, metavar="TASK_ID...")
@click.option("--terminate", is_flag=True, help="Also stop the task if a worker runs it.")
def revoke(app_path: str, task_ids: tuple[str, ...], terminate: bool) -> None:
    """Revoke task calls: workers skip them (or stop them, with --terminate); each is
    recorded as REVOKED. Exits 1 if any had already finished."""
    app = load_app(app_path)
    missed = 0
    for task_id in task_ids:
        if app.result(task_id).revoke(terminate=terminate):
            click.echo(f"{task_id} revoked")
        else:
            missed += 1
            click.echo(f"{task_id} not revoked: it already finished ({app.result(task_id).state})")
    sys.exit(1 if missed else 0)
