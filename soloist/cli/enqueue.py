"""`soloist enqueue`: send one task call from the shell."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from .common import app_option, load_app


def _json(text: str, kind: type, flag: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=flag) from None
    if not isinstance(value, kind):
        want = "a JSON list" if kind is list else "a JSON object"
        raise click.BadParameter(f"must be {want}, not {text!r}", param_hint=flag)
    return value


def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """An ISO 8601 datetime (naive meaning local time) or a unix time -> a unix time."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(
            f"expected an ISO 8601 datetime or a unix time, not {value!r}"
        ) from None


@click.command()
@app_option
@click.argument("task_name")
@click.option(
    "--args",
    "args_json",
    default="[]",
    show_default=True,
    help="JSON list of positional arguments.",
)
@click.option(
    "--kwargs",
    "kwargs_json",
    default="{}",
    show_default=True,
    help="JSON object of keyword arguments.",
)
@click.option("-Q", "--queue", default=None, show_default="the task's", help="Send to this queue.")
@click.option(
    "--countdown",
    type=click.FloatRange(min=0),
    default=None,
    help="Run no sooner than this many seconds from now.",
)
@click.option(
    "--eta",
    default=None,
    callback=_when,
    metavar="WHEN",
    help="Run no sooner than this ISO 8601 datetime or unix time.",
)
@click.option(
    "--expires",
    type=click.FloatRange(min=0),
    default=None,
    show_default="never",
    help="Seconds: not run if no worker starts it by then.",
)
@click.option(
    "--priority",
    type=int,
    default=None,
    show_default="the task's",
    help="Higher runs first where the broker has priorities.",
)
@click.option(
    "--task-id",
    default=None,
    show_default="a new random id",
    help="Send nothing if this id is already queued, running or done.",
)
def enqueue(
    app_path: str,
    task_name: str,
    args_json: str,
    kwargs_json: str,
    queue: str | None,
    countdown: float | None,
    eta: float | None,
    expires: float | None,
    priority: int | None,
    task_id: str | None,
) -> None:
    """Send one call of TASK_NAME and print its task id."""
    app = load_app(app_path)
    task = app.tasks.get(task_name)
    if task is None:
        known = ", ".join(sorted(app.tasks)) or "none"
        raise click.BadParameter(
            f"unknown task {task_name!r} (known: {known})", param_hint="TASK_NAME"
        )
    args, kwargs = _json(args_json, list, "--args"), _json(kwargs_json, dict, "--kwargs")
    if countdown is not None and eta is not None:
        raise click.UsageError("give --countdown or --eta, not both")
    try:
        result = task.apply_async(
            args,
            kwargs,
            countdown=countdown,
            eta=eta,
            queue=queue,
            priority=priority,
            task_id=task_id,
            expires=expires,
        )
    except TypeError as exc:  # arguments that do not fit the task, or cannot be encoded
        raise click.BadParameter(str(exc), param_hint="--args/--kwargs") from None
    click.echo(result.id)
