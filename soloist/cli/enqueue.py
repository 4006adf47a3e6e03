"""`soloist enqueue`: send one task call from the shell."""

from __future__ import annotations

import json

import click

from .common import app_option, load_app


@click.command()
@app_option
@click.argument("task_name")
@click.option("--args", "args_json", default="[]", help="JSON list of positional arguments.")
@click.option("--kwargs", "kwargs_json", default="{}", help="JSON object of keyword arguments.")
@click.option("--countdown", type=float, default=None, help="Run no sooner than this many s.")
@click.option("--queue", default=None, help="Send to this queue instead of the task's.")
def enqueue(
    app_path: str,
    task_name: str,
    args_json: str,
    kwargs_json: str,
    countdown: float | None,
    queue: str | None,
) -> None:
    """Send one call of TASK_NAME and print its task id."""
    app = load_app(app_path)
    task = app.tasks.get(task_name)
    if task is None:
        known = ", ".join(sorted(app.tasks)) or "none"
        raise click.BadParameter(
            f"unknown task {task_name!r} (known: {known})", param_hint="TASK_NAME"
        )
    try:
        args, kwargs = json.loads(args_json), json.loads(kwargs_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise click.BadParameter("--args must be a JSON list and --kwargs a JSON object")
    result = task.apply_async(args, kwargs, countdown=countdown, queue=queue)
    click.echo(result.id)
