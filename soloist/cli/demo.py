"""`soloist demo`: the whole loop on the embedded SQLite broker, with nothing to set up.

It enqueues a few thousand calls, some of which fail once and retry, some of which always
fail, and a few messages that are garbage; then it runs a solo worker in this process
with a progress bar and prints what happened.
"""

from __future__ import annotations

import logging
import random
import sys
import tempfile
import time
from collections import Counter
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..app import App
from ..errors import TaskError
from ..task import Task
from ..testing import drain
from ..urls import redact


class FlakyError(Exception):
    """A failure that goes away when the task is tried again."""


def make_app(url: str) -> tuple[App, dict[str, Task[[int], int]]]:
    """The demo's app on `url`, and its three tasks by name."""
    app = App(url, url)

    @app.task(name="demo.square")
    def square(x: int) -> int:
        return x * x

    @app.task(
        name="demo.flaky",
        bind=True,
        autoretry_for=(FlakyError,),
        max_retries=3,
        retry_backoff=0.05,
        retry_backoff_max=0.5,
    )
    def flaky(self: Task[[int], int], x: int) -> int:
        if self.request.retries == 0:
            raise FlakyError(f"transient failure for {x}")
        return x * x

    @app.task(name="demo.broken", max_retries=0)
    def broken(x: int) -> int:
        raise ValueError(f"cannot process {x}")

    return app, {"square": square, "flaky": flaky, "broken": broken}


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
    sys.exit(run_demo(count, broker))


def run_demo(count: int, url: str | None) -> int:
    console = Console()
    logging.getLogger("soloist").setLevel(logging.ERROR)  # the summary says it all
    with tempfile.TemporaryDirectory(prefix="soloist-demo-") as tmp:
        app, tasks = make_app(url or f"sqlite:///{tmp}/demo.db")
        try:
            return _run(console, app, tasks, count)
        finally:
            app.close()


def _run(console: Console, app: App, tasks: dict[str, Task[[int], int]], count: int) -> int:
    rng = random.Random(42)
    square, flaky, broken = tasks["square"], tasks["flaky"], tasks["broken"]
    app.broker.purge("default")
    console.print(
        f"[bold]Soloist demo[/]: {count} tasks on [cyan]{redact(app.broker.url)}[/], "
        "one solo worker"
    )
    handles = []
    t0 = time.perf_counter()
    for i in range(count):
        roll = rng.random()
        task = broken if roll < 0.01 else flaky if roll < 0.06 else square
        handles.append((task, i, task.delay(i)))
    garbage = [
        b"\x00not a message",
        b'j{"v": 1, "task": "demo.square"}',
        b'j{"v":1,"id":"x","task":"demo.nope","args":[],"kwargs":{}}',
    ]
    for body in garbage:
        app.broker.publish("default", body)
    publish_s = time.perf_counter() - t0
    console.print(
        f"enqueued {count + len(garbage)} messages in {publish_s:.2f}s "
        f"({(count + len(garbage)) / publish_s:,.0f}/s), {len(garbage)} of them garbage"
    )

    progress = Progress(
        TextColumn("running"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
    )
    bar = progress.add_task("tasks", total=count + len(garbage), rate="")
    start = time.perf_counter()

    def advance(event: str, **info: Any) -> None:
        progress.advance(bar)
        done = progress.tasks[0].completed
        if done % 100 == 0:
            rate = done / (time.perf_counter() - start)
            progress.update(bar, rate=f"{rate:,.0f} tasks/s")

    for event in ("task_succeeded", "task_failed", "dead_lettered"):
        app.hooks.on(event)(advance)
    with progress:
        stats = drain(app)
    elapsed = time.perf_counter() - start

    wrong = 0
    for task, i, handle in handles:
        try:
            wrong += handle.get(timeout=5) != i * i
        except TaskError:
            wrong += task is not broken
    table = Table(title="Summary")
    for column in ("done", "retried", "failed", "dead-lettered", "tasks/s", "wrong results"):
        table.add_column(column, justify="right")
    table.add_row(
        str(stats.done),
        str(stats.retried),
        str(stats.failed),
        str(stats.dead),
        f"{(stats.done + stats.failed) / elapsed:,.0f}",
        str(wrong),
    )
    console.print(table)
    dead = app.broker.dead_letters("default", 10_000)
    kinds = Counter(":".join(d.reason.split(":")[:2]) for d in dead)
    for kind, n in kinds.most_common():
        example = next(d.reason for d in dead if d.reason.startswith(kind))
        console.print(f"  {n:>4} dead-lettered, e.g. {example}")
    return 0 if wrong == 0 else 1
