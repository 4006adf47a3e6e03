"""`soloist dead-letters`: list, show, requeue and drop dead letters."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import click

from ..app import DEAD_SCAN, App
from ..brokers.base import DeadLetter
from ..errors import DecodeError
from ..message import Message
from . import tables
from .common import app_option, load_app, queue_names
from .tables import Column, for_terminal

#: Characters of a message's arguments shown by `list` and by `show`.
_ARGS_LIST, _ARGS_SHOW = 60, 2000


def describe(app: App, letter: DeadLetter, args_limit: int = _ARGS_SHOW) -> dict[str, Any]:
    """A dead letter as an operator reads it, its arguments cut to `args_limit` characters."""
    entry: dict[str, Any] = {
        "id": letter.id,
        "queue": letter.queue,
        "reason": letter.reason,
        "delivery_count": letter.delivery_count,
        "retries": letter.retries,
        "dead_at": letter.dead_at,
        "size": len(letter.body),
        "task": None,
        "task_id": None,
        "args": None,
    }
    message = decode(app, letter.body)
    if message is not None:
        call = json.dumps({"args": list(message.args), "kwargs": message.kwargs}, default=repr)
        cut = call if len(call) <= args_limit else call[: args_limit - 1] + "…"
        entry.update(task=message.task, task_id=message.id, args=cut)
    return entry


def decode(app: App, body: bytes) -> Message | None:
    try:
        return app.decode(body)
    except DecodeError:
        return None


def find(app: App, queues: Sequence[str], ids: Sequence[str] | None) -> list[DeadLetter]:
    """The dead letters of `queues` with these ids (all when None)."""
    wanted = None if ids is None else set(ids)
    return [
        letter
        for queue in queues
        for letter in app.broker.dead_letters(queue, DEAD_SCAN)
        if wanted is None or letter.id in wanted
    ]


def requeue(app: App, letters: Sequence[DeadLetter]) -> int:
    """Put dead letters back on their queues (`App.requeue_dead`); how many this moved."""
    by_queue: dict[str, list[str]] = {}
    for letter in letters:
        by_queue.setdefault(letter.queue, []).append(letter.id)
    return sum(app.requeue_dead(queue, ids) for queue, ids in by_queue.items())


def drop(app: App, letters: Sequence[DeadLetter]) -> int:
    return sum(app.broker.drop_dead(letter.queue, [letter.id]) for letter in letters)


def _queues(app: App, queue: str | None) -> list[str]:
    return [queue] if queue else queue_names(app)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _pick(app: App, queue: str | None, ids: tuple[str, ...], all_: bool) -> list[DeadLetter]:
    if bool(ids) == all_:
        raise click.UsageError("give dead-letter IDs or --all, not both or neither")
    letters = find(app, _queues(app, queue), None if all_ else ids)
    missing = set(ids) - {letter.id for letter in letters}
    if missing:
        click.echo(f"not found (already requeued or dropped?): {', '.join(sorted(missing))}")
    return letters


_COLUMNS = [
    Column("id"),
    Column("queue"),
    Column("task"),
    Column("task id"),
    Column("arguments", cut=True),
    Column("reason", cut=True),
    Column("deliveries"),
    Column("dead at"),
]

queue_option = click.option(
    "-Q", "--queue", default=None, show_default="every queue of the app", help="Only this queue."
)


@click.group(name="dead-letters")
def dead_letters() -> None:
    """Inspect and act on dead letters (the app's queues, or -Q)."""


@dead_letters.command(name="list")
@app_option
@queue_option
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def list_(app_path: str, queue: str | None, limit: int, as_json: bool) -> None:
    """The oldest dead letters of each queue."""
    app = load_app(app_path)
    terminal = for_terminal()  # elsewhere, scripts read every value whole
    entries = [
        describe(app, letter, _ARGS_LIST if terminal else _ARGS_SHOW)
        for q in _queues(app, queue)
        for letter in app.broker.dead_letters(q, limit)
    ]
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    rows = [
        [
            e["id"],
            e["queue"],
            e["task"] or "?",
            e["task_id"] or "?",
            e["args"] or f"({e['size']} bytes, undecodable)",
            e["reason"],
            str(e["delivery_count"]),
            _when(e["dead_at"]),
        ]
        for e in entries
    ]
    if terminal and not rows:
        click.echo("no dead letters")
        return
    tables.show(None, _COLUMNS, rows)


@dead_letters.command()
@app_option
@queue_option
@click.argument("letter_id", metavar="ID")
def show(app_path: str, queue: str | None, letter_id: str) -> None:
    """One dead letter in full (arguments up to 2,000 characters), as JSON."""
    app = load_app(app_path)
    letters = find(app, _queues(app, queue), [letter_id])
    if not letters:
        raise click.BadParameter(f"no dead letter {letter_id!r}", param_hint="ID")
    click.echo(json.dumps(describe(app, letters[0]), indent=2))


@dead_letters.command(name="requeue")
@app_option
@queue_option
@click.argument("ids", nargs=-1, metavar="[ID...]")
@click.option("--all", "all_", is_flag=True, help="Every dead letter of the queues.")
def requeue_command(app_path: str, queue: str | None, ids: tuple[str, ...], all_: bool) -> None:
    """Run dead letters again, their counts reset and their stored failures forgotten."""
    app = load_app(app_path)
    click.echo(f"requeued {requeue(app, _pick(app, queue, ids, all_))}")


@dead_letters.command(name="drop")
@app_option
@queue_option
@click.argument("ids", nargs=-1, metavar="[ID...]")
@click.option("--all", "all_", is_flag=True, help="Every dead letter of the queues.")
def drop_command(app_path: str, queue: str | None, ids: tuple[str, ...], all_: bool) -> None:
    """Delete dead letters for good."""
    app = load_app(app_path)
    click.echo(f"dropped {drop(app, _pick(app, queue, ids, all_))}")
