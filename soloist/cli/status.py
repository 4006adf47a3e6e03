"""`soloist status`: queues and workers on one screen."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from ..app import App
from ..worker import constants as c
from .common import app_option, load_app, queue_names

#: A worker whose last heartbeat is older than this is shown as gone; the broker drops it
#: once its heartbeat ttl (HEARTBEAT_TTL) passes.
GONE_AFTER = 3 * c.HEARTBEAT_INTERVAL


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
                "last_seen": seen,
                "gone": now - seen > GONE_AFTER,
            }
        )
    consumed = [q for w in workers if not w["gone"] for q in w["queues"]]
    queues = []
    for name in queue_names(app, [*extra_queues, *consumed]):
        stats = app.broker.stats(name)
        queues.append(
            {
                "queue": name,
                "depth": stats.depth,
                "delayed": stats.delayed,
                "in_flight": stats.in_flight,
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


def render(snap: dict[str, Any]) -> Group:
    queues = Table("queue", "waiting", "of them delayed", "in flight", "dead letters")
    queues.title = "Queues"
    for q in snap["queues"]:
        queues.add_row(
            escape(q["queue"]), _n(q["depth"]), _n(q["delayed"]), _n(q["in_flight"]), _n(q["dead"])
        )
    workers = Table("worker", "host", "pid", "pool", "running", "done", "last seen")
    workers.title = "Workers"
    for w in snap["workers"]:
        running = ", ".join(f"{r['task']}[{r['id']}] {_ago(r['for'])}" for r in w["running"])
        running = escape(running)  # not rich markup: [id] would vanish
        seen = _ago(snap["time"] - w["last_seen"]) + " ago"
        workers.add_row(
            escape(w["id"]),
            escape(w["host"] or "?"),
            str(w["pid"] or "?"),
            f"{w['pool']} x{w['concurrency']}" if w["concurrency"] else str(w["pool"]),
            running or "idle",
            _n(w["done"]),
            f"[red]gone[/red] ({seen})" if w["gone"] else seen,
        )
    return Group(queues, workers if snap["workers"] else "no workers")


@click.command()
@app_option
@click.option("-Q", "--queues", default=None, help="More comma-separated queues to show.")
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
        if not watch:
            Console().print(render(snapshot(app, extra)))
            return
        with Live(render(snapshot(app, extra)), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(snapshot(app, extra)), refresh=True)
    except KeyboardInterrupt:
        pass
