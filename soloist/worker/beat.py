"""The scheduler a worker runs with `--beat`: each periodic task's ticks are enqueued
exactly once, however many workers run a scheduler, and none of them is special.

Every scheduler computes the same tick times (soloist.schedules) and claims each tick in
the result store (ResultStore.claim: one winner however many try) before enqueueing it:

1. claim `tick:<task id>` as `lease <worker id>` for CLAIM_LEASE seconds;
2. the winner enqueues the task, with the tick's own task id `<schedule>@<UTC time>`;
3. it swaps the claim to `done <worker id>`, kept for `keep` seconds, and records the
   schedule's last tick (shown by `soloist schedules`, read by a scheduler that starts).

A scheduler that finds a tick `done` moves past it; one that finds it leased goes on with
later ticks and looks at that one again on each pass. A claimer that dies between 1 and 3
leaves a lease that lapses, and the next scheduler to look claims the tick and enqueues
it: no tick is lost. Nor is one sent twice when the claimer died after its enqueue (2): a
send with a task id reserves that id in the result store first (`App.send_once`), so the
second send of the tick is a no-op.

Missed ticks (no scheduler ran for a while): a scheduler starts from the schedule's last
recorded tick. Ticks that fell more than MISSED_AFTER seconds ago run once (the newest of
them), or each one with `catch_up=True`. A schedule changed in code needs nothing cleaned:
claims expire, and the last tick is just a time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from ..schedules import Schedule

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("soloist.beat")

#: How often a scheduler looks for due ticks: a tick is enqueued within this of its time.
BEAT_TICK = 0.2
#: How long a claimed tick waits for its claimer to enqueue it before another scheduler
#: takes it: above the brokers' own reconnect time (20 s on Redis), so a live claimer
#: riding out an outage is not overtaken.
CLAIM_LEASE = 30.0
#: A done claim is kept for this long, or ten periods if longer: a scheduler never looks
#: back further than half of it, so it cannot claim a tick again once its claim expired.
KEEP = 600.0
#: The last tick of a schedule is remembered this long (or two periods if longer).
LAST_KEEP = 30 * 24 * 3600.0
#: Ticks older than this when first seen were missed (no scheduler ran): the newest runs
#: once, unless the schedule catches up. Younger ones each run (a slow pass, a restart).
MISSED_AFTER = 5.0


def tick_id(schedule: Schedule, tick: float) -> str:
    """The task id of one tick: the same on every scheduler."""
    when = dt.datetime.fromtimestamp(tick, dt.timezone.utc)
    return f"{schedule.name}@{when.isoformat(timespec='milliseconds')}"


def last_key(schedule: Schedule) -> str:
    """The store key of a schedule's last enqueued tick: JSON {tick, task_id, worker, at}."""
    return f"schedule:{schedule.name}"


class Beat(threading.Thread):
    """Enqueues the app's schedules' ticks; one per worker started with `--beat`."""

    def __init__(self, app: App, worker_id: str) -> None:
        super().__init__(name="soloist-beat", daemon=True)
        if app.result_url is None or not app.results.shared:
            raise ConfigurationError(
                "--beat needs a result store every worker shares (sqlite://, redis://) to "
                f"claim ticks in, not {app.result_url or 'none'}: set SOLOIST_RESULT_URL"
            )
        app.results.peek("beat")  # a store that keeps no shared state says so now
        if not app.schedules:
            log.warning("--beat: the app has no periodic tasks")
        self.app = app
        self.worker_id = worker_id
        #: Per schedule: every tick at or before this time is enqueued (by someone), or
        #: waiting for the scheduler that claimed it (`_waiting`).
        self.cursors: dict[str, float] = {}
        #: Per schedule: nothing to do before this time.
        self._next: dict[str, float] = {}
        #: Per schedule: ticks claimed by another scheduler that has not enqueued them.
        self._waiting: dict[str, set[float]] = {}
        self._halt = threading.Event()
        self._failing = False

    def run(self) -> None:
        while not self._halt.wait(BEAT_TICK):
            try:
                self.run_once()
                if self._failing:
                    log.warning("beat: store and broker reachable again")
                    self._failing = False
            except Exception as exc:
                if not self._failing:
                    log.warning("beat: cannot enqueue ticks (will keep trying): %s", exc)
                    self._failing = True

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)

    def run_once(self, now: float | None = None) -> list[str]:
        """One pass over the schedules; the task ids this scheduler enqueued."""
        now = time.time() if now is None else now
        sent: list[str] = []
        for schedule in self.app.schedules.values():
            if now >= self._next.get(schedule.name, 0.0):
                sent += self._pass(schedule, now)
        return sent

    def _pass(self, schedule: Schedule, now: float) -> list[str]:
        keep = max(KEEP, 10 * schedule.period(now))
        cursor = self.cursors.get(schedule.name)
        # A running scheduler never looks back past half the time claims are kept.
        cursor = self._start(schedule, now) if cursor is None else max(cursor, now - keep / 2)
        due = schedule.ticks(cursor, now)
        if len(due) > 1 and not schedule.catch_up and due[0] < now - MISSED_AFTER:
            due = due[-1:]
        # Ticks another scheduler claimed and has not enqueued yet: looked at again until
        # it does, or its lease lapses and one of us takes them.
        earlier = sorted(t for t in self._waiting.pop(schedule.name, ()) if t > now - keep / 2)
        sent, waiting = [], set()
        for tick in [*earlier, *due]:
            task_id = self._enqueue_once(schedule, tick, keep)
            if task_id is None:
                waiting.add(tick)
            elif task_id:
                sent.append(task_id)
        self.cursors[schedule.name] = max(cursor, *due) if due else cursor
        self._waiting[schedule.name] = waiting
        upcoming = schedule.upcoming(self.cursors[schedule.name], 1)[0]
        self._next[schedule.name] = now if waiting else upcoming
        return sent

    def _start(self, schedule: Schedule, now: float) -> float:
        """Where a scheduler starts: the last tick anyone enqueued, or (a new schedule) now."""
        last = self.app.results.peek(last_key(schedule))
        return now if last is None else min(float(json.loads(last)["tick"]), now)

    def _enqueue_once(self, schedule: Schedule, tick: float, keep: float) -> str | None:
        """Claim and enqueue one tick: its task id if this scheduler enqueued it, "" if
        another did, None if another holds the claim and has not enqueued it yet."""
        store = self.app.results
        task_id = tick_id(schedule, tick)
        key, lease = f"tick:{task_id}", f"lease {self.worker_id}"
        held = store.claim(key, lease, CLAIM_LEASE)
        if held is not None:
            return "" if held.startswith("done ") else None
        try:
            self.app.tasks[schedule.name].apply_async(
                schedule.args, schedule.kwargs, task_id=task_id
            )
        except BaseException:
            store.swap(key, lease, None, CLAIM_LEASE)  # not enqueued: let anyone retry now
            raise
        store.swap(key, lease, f"done {self.worker_id}", keep)
        last = {"tick": tick, "task_id": task_id, "worker": self.worker_id, "at": time.time()}
        store.set_value(
            last_key(schedule), json.dumps(last), max(LAST_KEEP, 2 * schedule.period(tick))
        )
        log.info("beat: enqueued %s", task_id)
        return task_id
