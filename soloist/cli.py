"""The `soloist` command line: worker, enqueue, demo, and operator commands."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .app import App
from .errors import SoloistError
from .pools import NAMES as POOL_NAMES
from .worker import constants as c

F = TypeVar("F", bound=Callable[..., Any])


def load_app(path: str) -> App:
    """`pkg.module:app` (or `pkg.module`, which must define `app`) -> the App object."""
    module_name, _, attr = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would, so local modules are found
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}", param_hint="-A") from None
    app = getattr(module, attr or "app", None)
    if not isinstance(app, App):
        raise click.BadParameter(
            f"{module_name}:{attr or 'app'} is not a soloist App", param_hint="-A"
        )
    return app


def app_option(fn: F) -> F:
    return click.option(
        "-A",
        "--app",
        "app_path",
        required=True,
        metavar="MODULE:APP",
        envvar="SOLOIST_APP",
        help="The app, e.g. myproj.tasks:app.",
    )(fn)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
    )


@click.group()
@click.version_option(package_name="soloist")
def cli() -> None:
    """Soloist: a task queue built around the inline (solo) worker."""


def _positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise click.BadParameter("must be greater than 0")
    return value


@cli.command()
@app_option
@click.option("-Q", "--queues", default=None, help="Comma-separated queues, in priority order.")
@click.option("--pool", type=click.Choice(POOL_NAMES), default="solo", show_default=True)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Tasks at once in the threads and processes pools.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Deliveries fetched per round trip.",
)
@click.option(
    "--lease",
    type=float,
    default=c.DEFAULT_LEASE,
    show_default=True,
    callback=_positive,
    help="Seconds a delivery stays invisible between renewals.",
)
@click.option(
    "--time-limit",
    type=float,
    default=None,
    callback=_positive,
    help="Default hard time limit in seconds.",
)
@click.option(
    "--soft-time-limit",
    type=float,
    default=None,
    callback=_positive,
    help="Default soft time limit in seconds.",
)
@click.option("--burst", is_flag=True, help="Exit 0 once the queues are empty.")
@click.option(
    "--loglevel",
    "-l",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
def worker(
    app_path: str,
    queues: str | None,
    pool: str,
    concurrency: int,
    prefetch: int,
    lease: float,
    time_limit: float | None,
    soft_time_limit: float | None,
    burst: bool,
    loglevel: str,
) -> None:
    """Run a worker: each task runs inline in its main thread (with --pool solo)."""
    from .worker import Worker

    _setup_logging(loglevel)
    app = load_app(app_path)
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    w = Worker(
        app,
        names,
        pool=pool,
        concurrency=concurrency,
        prefetch=prefetch,
        lease=lease,
        burst=burst,
        time_limit=time_limit,
        soft_time_limit=soft_time_limit,
    )
    w.broker.depth(w.queues[0])  # fail fast, with one line, if the broker is unreachable
    sys.exit(w.run())


@cli.command()
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


@cli.command()
@click.option(
    "--tasks",
    "count",
    type=click.IntRange(min=1, max=1_000_000),
    default=3000,
    show_default=True,
    help="How many tasks to enqueue.",
)
@click.option("--broker", default=None, help="Broker URL (default: a fresh SQLite file).")
def demo(count: int, broker: str | None) -> None:
    """Enqueue tasks (some fail and retry), run a solo worker on them, print a summary."""
    from .demo import run_demo

    sys.exit(run_demo(count, broker))


def main() -> None:
    """Entry point: Soloist errors become one line on stderr and a non-zero exit."""
    try:
        cli.main(standalone_mode=True)
    except SoloistError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(c.EXIT_CONFIG)
