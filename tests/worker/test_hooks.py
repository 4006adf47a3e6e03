"""A user's hooks see each task's life, in order, from a real worker loop: every outcome
goes through the same steps (settling, its result stored by `before_ack`, then its event)."""

from __future__ import annotations

from typing import Any

from soloist import App
from soloist.results.base import FAILURE, RETRY, REVOKED, SUCCESS
from soloist.testing import drain


def test_a_hook_sees_each_task_life_in_order(sqlite_url: str) -> None:
    app = App(sqlite_url, sqlite_url)
    seen: list[tuple[str, str]] = []  # (delivery id, event)
    names: dict[str, str] = {}  # delivery id -> task name
    stored: dict[str, list[str | None]] = {}  # task name -> its stored state at each before_ack

    @app.task(name="ok")
    def ok() -> int:
        return 1

    @app.task(name="again", bind=True)
    def again(self: Any) -> None:
        if self.request.retries == 0:
            raise self.retry(countdown=0)

    @app.task(name="boom", max_retries=0)
    def boom() -> None:
        raise ValueError("boom")

    def record(event: str, **info: Any) -> None:
        delivery = info.get("delivery")
        seen.append((delivery.id if delivery else "", event))
        outcome = info.get("outcome")
        if outcome is not None:
            names[delivery.id] = outcome.task or "?"
        if event == "before_ack":
            record = app.results.get(outcome.task_id) if outcome.task_id else None
            stored.setdefault(outcome.task or "?", []).append(record[0] if record else None)

    for event in (
        "worker_start",
        "received",
        "task_started",
        "settling",
        "before_ack",
        "task_succeeded",
        "task_retried",
        "task_failed",
        "task_revoked",
        "dead_lettered",
        "worker_stop",
    ):
        app.hooks.on(event)(record)

    ok.delay()
    again.delay()
    boom.delay()
    ok.delay().revoke()
    app.broker.publish("default", b"not a message")
    drain(app)
    app.close()

    assert seen[0] == ("", "worker_start") and seen[-1] == ("", "worker_stop")
    lives: dict[str, list[str]] = {}
    for delivery_id, event in seen[1:-1]:
        lives.setdefault(names[delivery_id], []).append(event)
    settled = ("settling", "before_ack")
    assert lives == {
        "ok": [
            *("received", "task_started", *settled, "task_succeeded"),
            *("received", *settled, "task_revoked"),
        ],
        "again": [
            *("received", "task_started", *settled, "task_retried"),
            *("received", "task_started", *settled, "task_succeeded"),
        ],
        "boom": ["received", "task_started", *settled, "task_failed"],
        "?": ["received", *settled, "dead_lettered"],
    }
    # Recorded before it is settled, whatever the outcome (the message itself had no id).
    assert stored == {
        "ok": [SUCCESS, REVOKED],
        "again": [RETRY, SUCCESS],
        "boom": [FAILURE],
        "?": [None],
    }
