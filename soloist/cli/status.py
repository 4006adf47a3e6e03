"""`soloist status`: queues and workers on one screen."""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live

from ..app import App
from ..worker.constants import HEARTBEAT_INTERVAL
from .common import app_option, load_app, queue_names
from .tables import Column, for_terminal, table
from .tables import plain as plain_lines

#: A worker whose last heartbeat is older than this is shown as gone; the broker drops it
#: once its heartbeat ttl (HEARTBEAT_TTL) passes.
GONE_AFTER = 3 * HEARTBEAT_INTERVAL


def snapshot(app: App, extra_queues: Sequence[str] = ()) -> dict[str, Any]:
    """Queues (the app's, the workers', and `extra_queues`) and workers, as plain data."""
    now = time.time()
    workers = []
    for wid, (raw, seen) in sorted(app.broker.workers().items()):
        try:
            info = json.loads(raw)
        except ValueError:
            info = {}
        workers.append(
            {
                "id": wid,
                "host": info.get("host"),
                "pid": info.get("pid"),
                "pool": info.get("pool"),
                "concurrency": info.get("concurrency"),
                "queues": info.get("queues", []),
                "done": info.get("done"),
                "failed": info.get("failed"),
                "running": [
                    {"task": r.get("task"), "id": r.get("id"), "for": now - r.get("since", now)}
                    for r in info.get("running", [])
                ],
                "held": info.get("held", {}),
                "last_seen": seen,
                "gone": now - seen > GONE_AFTER,
            }
        )
    consumed = [q for w in workers if not w["gone"] for q in w["queues"]]
    # Where the broker cannot count a queue's leased messages (RabbitMQ), the live
    # workers' heartbeats say how many each holds.
    held: collections.Counter[str] = collections.Counter()
    for w in workers:
        if not w["gone"]:
            held.update(w["held"])
    queues = []
    for name in queue_names(app, [*extra_queues, *consumed]):
        stats = app.broker.stats(name)
        queues.append(
            {
                "queue": name,
                "depth": stats.depth,
                "delayed": stats.delayed,
                "in_flight": held[name] if stats.in_flight is None else stats.in_flight,
                "dead": stats.dead,
                "lost": stats.lost,
            }
        )
    return {"time": now, "queues": queues, "workers": workers}


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


QUEUE_COLUMNS = [
    Column("queue"),
    Column("waiting"),
    Column("of them delayed"),
    Column("in flight"),
    Column("dead letters"),
    Column("lost"),
]
WORKER_COLUMNS = [
    Column("worker"),
    Column("host"),
    Column("pid"),
    Column("pool"),
    Column("running", cut=True),
    Column("done"),
    Column("failed"),
    Column("last seen"),
]


def rows(snap: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    """The queue and worker rows of a snapshot, as text: the same figures as its JSON."""
    queues = [
        [q["queue"], *(_n(q[k]) for k in ("depth", "delayed", "in_flight", "dead", "lost"))]
        for q in snap["queues"]
    ]
    workers = []
    for w in snap["workers"]:
        running = ", ".join(f"{r['task']}[{r['id']}] {_ago(r['for'])}" for r in w["running"])
        seen = _ago(snap["time"] - w["last_seen"]) + " ago"
        workers.append(
            [
                w["id"],
                w["host"] or "?",
                str(w["pid"] or "?"),
                f"{w['pool']} x{w['concurrency']}" if w["concurrency"] else str(w["pool"]),
                running or "idle",
                _n(w["done"]),
                _n(w["failed"]),
                f"gone ({seen})" if w["gone"] else seen,
            ]
        )
    return queues, workers


def render(snap: dict[str, Any]) -> Group:
    """For a terminal: ids and names whole, what each worker runs cut to fit."""
    queues, workers = rows(snap)
    return Group(
        table("Queues", QUEUE_COLUMNS, queues),
        table("Workers", WORKER_COLUMNS, workers) if workers else "no workers",
    )


def plain(snap: dict[str, Any]) -> str:
    """For scripts: the queue lines, a blank line, the worker lines, tab-separated."""
    queues, workers = rows(snap)
    return plain_lines(QUEUE_COLUMNS, queues) + "\n\n" + plain_lines(WORKER_COLUMNS, workers)


@click.command()
@app_option
@click.option(
    "-Q", "--queues", default=None, show_default="none", help="More comma-separated queues to show."
)
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts (one line per refresh).")
@click.option("--watch", is_flag=True, help="Refresh until interrupted.")
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True, help="Seconds."
)
def status(app_path: str, queues: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """Queues (waiting, delayed, in flight, dead letters) and workers (what each runs)."""
    app = load_app(app_path)
    extra = [q.strip() for q in queues.split(",") if q.strip()] if queues else []
    try:
        if as_json:
            while True:
                click.echo(json.dumps(snapshot(app, extra)))
                if not watch:
                    return
                time.sleep(interval)
        if not watch or not for_terminal():
            while True:
                snap = snapshot(app, extra)
                if for_terminal():
                    Console().print(render(snap))
                else:
                    click.echo(plain(snap))
                if not watch:
                    return
                time.sleep(interval)
        with Live(render(snapshot(app, extra)), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(snapshot(app, extra)), refresh=True)
    except KeyboardInterrupt:
        pass
