"""`soloist demo`: the whole loop on the embedded SQLite broker."""

from __future__ import annotations

import sys

import click


@click.command()
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
    from ..demo import run_demo

    sys.exit(run_demo(count, broker))
