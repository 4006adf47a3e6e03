"""`soloist schedules`: each periodic task's schedule, next runs, and last enqueued tick."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any
from zoneinfo import ZoneInfo

import click

from ..app import App
from ..worker.beat import last_key
from .common import app_option, load_app
from .tables import Column, show

#: Next run times shown per schedule.
UPCOMING = 3


def snapshot(app: App, count: int = UPCOMING) -> list[dict[str, Any]]:
    """Each schedule as plain data: what it is, its next `count` runs, its last tick."""
    now = time.time()
    rows = []
    for name, schedule in sorted(app.schedules.items()):
        raw = app.results.peek(last_key(schedule))
        last = json.loads(raw) if raw is not None else None
        rows.append(
            {
                "name": name,
                "schedule": schedule.describe(),
                "cron": schedule.cron,
                "every": schedule.every,
                "tz": schedule.tz,
                "queue": app.tasks[name].options.queue,
                "catch_up": schedule.catch_up,
                "next": [_iso(t, schedule.tz) for t in schedule.upcoming(now, count)],
                "last": None if last is None else {**last, "tick": _iso(last["tick"], schedule.tz)},
            }
        )
    return rows


def _iso(when: float, tz: str) -> str:
    return dt.datetime.fromtimestamp(when, ZoneInfo(tz)).isoformat(timespec="seconds")


@click.command()
@app_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "-n",
    "--next",
    "count",
    type=click.IntRange(min=1, max=100),
    default=UPCOMING,
    show_default=True,
    help="How many next run times to show.",
)
def schedules(app_path: str, as_json: bool, count: int) -> None:
    """Show the app's periodic tasks: schedule, next runs, last tick enqueued and by whom."""
    app = load_app(app_path)
    rows = snapshot(app, count)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no periodic tasks (@app.periodic)")
        return
    show(
        None,
        [Column(n) for n in ("task", "schedule", "queue", "next runs", "last tick", "enqueued by")],
        [
            [
                row["name"],
                row["schedule"] + (", catch up" if row["catch_up"] else ""),
                row["queue"],
                "\n".join(row["next"]),
                "-" if row["last"] is None else row["last"]["tick"],
                "-" if row["last"] is None else row["last"]["worker"],
            ]
            for row in rows
        ],
    )
