"""`soloist worker`: run a worker."""

from __future__ import annotations

import sys

import click

from ..pools import NAMES as POOL_NAMES
from ..worker import constants as c
from .common import app_option, load_app, setup_logging


def _positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise click.BadParameter("must be greater than 0")
    return value


@click.command()
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
    from ..worker import Worker

    setup_logging(loglevel)
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
