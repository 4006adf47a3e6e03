"""What the dashboard shows, as JSON-ready data: read from the broker and the result store,
with every shown text capped in size.

Reading costs a fixed number of broker calls, whatever the queues hold: the overview is the
`soloist status` snapshot (one `workers()` call and one `stats()` per queue), shared by every
open page. Pages get the last snapshot at once; when it is older than `refresh` seconds, one
new read starts in the background, and only while pages ask (nothing is read when none is
open). A read that takes long (SQLite counts a queue's rows: 1.4 s at a million) spaces the
next ones out to SLOW_READS times its length, so the dashboard never keeps the broker busy.

Throughput comes from counters the workers already keep: each heartbeat carries a worker's
tasks done and failed so far, and the board adds up their growth per minute (in memory, for
the last hour since it started), so no task pays a round trip for it.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..app import App
from ..brokers.base import DeadLetter
from ..cli import dead_letters as letters
from ..cli.schedules import snapshot as schedules_snapshot
from ..cli.status import snapshot
from ..results.base import FAILURE, PENDING, SUCCESS

log = logging.getLogger("soloist.dashboard")

#: Characters of a dead letter's arguments in the list, and when one is shown alone.
ARGS_LIST, ARGS_SHOW = 200, 2000
#: Characters of a result value, an error message and a traceback shown.
VALUE_CAP, MESSAGE_CAP, TRACEBACK_CAP = 4000, 2000, 20000
#: Dead letters listed per queue (the page shows the oldest).
LETTERS_LISTED = 100
#: Dead letters read per queue when looking for a task's arguments.
LETTERS_SEARCHED = 1000
#: Minutes of throughput kept.
HISTORY_MINUTES = 60
#: Reads of the broker are at least this many times their own length apart.
SLOW_READS = 4


def cap(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value: Any, limit: int = VALUE_CAP) -> str:
    """A value as JSON text (repr for what JSON cannot hold), capped."""
    return cap(json.dumps(value, default=repr), limit)


def _step(item: Any) -> dict[str, Any]:
    """A workflow step of a message's options: its task and id (a group: its callback's)."""
    if isinstance(item, dict) and isinstance(item.get("group"), list):
        callback = item.get("cb")
        cb_id = callback.get("id") if isinstance(callback, dict) else None
        return {"task": f"group of {len(item['group'])}", "id": cb_id}
    if isinstance(item, dict):
        return {"task": cap(str(item.get("task")), 200), "id": item.get("id")}
    return {"task": "?", "id": None}


def workflow(options: dict[str, Any]) -> list[dict[str, Any]] | None:
    """What follows a call in its workflow (its message's `wf` option, see
    soloist.workflow): each step's role, task and id; None for a plain call."""
    wf = options.get("wf")
    if not isinstance(wf, dict):
        return None
    follows = []
    for key, role in (("link", "on success"), ("err", "on failure")):
        follows += [{"as": role, **_step(item)} for item in wf.get(key) or ()]
    chain = wf.get("chain") or []
    if chain:
        follows.append({"as": f"next in chain ({len(chain)} steps left)", **_step(chain[0])})
    chord = wf.get("chord")
    if isinstance(chord, dict):
        member = f"member {int(chord.get('i', 0)) + 1} of {chord.get('n')}"
        follows.append({"as": f"chord callback ({member})", **_step(chord.get("cb"))})
    return follows


class Throughput:
    """Tasks done and failed per minute, from the growth of the workers' own counters."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}
        # minute (unix time // 60) -> [done, failed]
        self._minutes: collections.OrderedDict[int, list[int]] = collections.OrderedDict()

    def observe(self, now: float, workers: Sequence[dict[str, Any]]) -> None:
        bucket = self._minutes.setdefault(int(now // 60), [0, 0])
        for w in workers:
            done, failed = int(w.get("done") or 0), int(w.get("failed") or 0)
            before = self._last.get(w["id"])
            self._last[w["id"]] = (done, failed)
            if before is not None:  # a worker first seen counts from then on
                bucket[0] += max(done - before[0], 0)
                bucket[1] += max(failed - before[1], 0)
        alive = {w["id"] for w in workers}
        for wid in set(self._last) - alive:
            del self._last[wid]
        while len(self._minutes) > HISTORY_MINUTES:
            self._minutes.popitem(last=False)

    def series(self, now: float) -> dict[str, list[int]]:
        """The last HISTORY_MINUTES minutes, oldest first (zeros before the board started)."""
        last = int(now // 60)
        minutes = range(last - HISTORY_MINUTES + 1, last + 1)
        return {
            "done": [self._minutes.get(m, [0, 0])[0] for m in minutes],
            "failed": [self._minutes.get(m, [0, 0])[1] for m in minutes],
        }


class Board:
    """The dashboard's reads and actions on one app."""

    def __init__(self, app: App, extra_queues: Sequence[str] = (), refresh: float = 1.0) -> None:
        self.app = app
        self.extra_queues = list(extra_queues)
        self.refresh = refresh
        self.throughput = Throughput()
        self._lock = threading.Lock()
        self._snap: dict[str, Any] | None = None
        self._next = 0.0  # monotonic time the next read may start
        self._reading = False

    def overview(self) -> dict[str, Any]:
        """Queues, workers and throughput: the last snapshot (read now if there is none),
        a new read started in the background when it is due."""
        with self._lock:
            snap = self._snap
            if snap is not None:
                if not self._reading and time.monotonic() >= self._next:
                    self._reading = True
                    threading.Thread(
                        target=self._read_quietly, name="soloist-dashboard-read", daemon=True
                    ).start()
                return snap
        return self._read()

    def _read(self) -> dict[str, Any]:
        started = time.monotonic()
        try:
            snap = snapshot(self.app, self.extra_queues)
        finally:
            with self._lock:
                self._reading = False
                took = time.monotonic() - started
                self._next = started + max(self.refresh, SLOW_READS * took)
        for w in snap["workers"]:
            for r in w["running"]:
                r["task"] = cap(str(r["task"]), 200)
        with self._lock:
            self.throughput.observe(snap["time"], snap["workers"])
            self._snap = {**snap, "throughput": self.throughput.series(snap["time"])}
            return self._snap

    def _read_quietly(self) -> None:
        """A background read: a failure keeps the last snapshot, marked with the error."""
        try:
            self._read()
        except Exception as exc:
            log.warning("dashboard: reading the broker failed: %s", type(exc).__name__)
            with self._lock:
                if self._snap is not None:
                    self._snap = {**self._snap, "error": f"{type(exc).__name__}: {exc}"}

    def queues(self) -> list[str]:
        """The queues of the last snapshot."""
        snap = self._snap or self.overview()
        return [q["queue"] for q in snap["queues"]]

    def dead_letters(self, queue: str | None = None) -> list[dict[str, Any]]:
        """The oldest LETTERS_LISTED dead letters of each queue (or of `queue`)."""
        return [
            letters.describe(self.app, letter, ARGS_LIST)
            for q in ([queue] if queue else self.queues())
            for letter in self.app.broker.dead_letters(q, LETTERS_LISTED)
        ]

    def dead_letter(self, queue: str, letter_id: str) -> dict[str, Any] | None:
        found = letters.find(self.app, [queue], [letter_id])
        return letters.describe(self.app, found[0], ARGS_SHOW) if found else None

    def settle_dead(self, queue: str, ids: Sequence[str] | None, requeue: bool) -> int:
        """Requeue (`App.requeue_dead`) or drop the dead letters of `queue` with these ids
        (every one when None); how many moved."""
        if requeue:
            return self.app.requeue_dead(queue, ids)
        return self.app.broker.drop_dead(queue, ids)

    def task(self, task_id: str) -> dict[str, Any]:
        """A task call by id: its state and result or error, who runs it, its arguments
        when a dead letter still holds them."""
        raw = self.app.results.get(task_id)
        record: dict[str, Any] = {} if raw is None else self.app.codec.loads(raw[1])
        state = PENDING if raw is None else raw[0]
        entry: dict[str, Any] = {"id": task_id, "state": state, "done": record.get("done")}
        if state == SUCCESS:
            entry["value"] = shown(record.get("value"))
        elif state == FAILURE:
            entry["error"] = {
                "type": cap(str(record.get("exc_type")), 200),
                "message": cap(str(record.get("message")), MESSAGE_CAP),
                "traceback": cap(str(record.get("traceback") or ""), TRACEBACK_CAP),
            }
        else:
            entry["record"] = shown(record)
        entry["running"] = [
            {"worker": w["id"], "host": w["host"], "task": r["task"], "for": r["for"]}
            for w in self.overview()["workers"]
            if not w["gone"]
            for r in w["running"]
            if r["id"] == task_id
        ]
        entry["dead_letter"] = self._letter_of(task_id)
        return entry

    def _letter_of(self, task_id: str) -> dict[str, Any] | None:
        """The dead letter holding this call (with its workflow), if one does."""
        for queue in self.queues():
            letter: DeadLetter
            for letter in self.app.broker.dead_letters(queue, LETTERS_SEARCHED):
                message = letters.decode(self.app, letter.body)
                if message is not None and message.id == task_id:
                    described = letters.describe(self.app, letter, ARGS_SHOW)
                    return {**described, "workflow": workflow(message.options)}
        return None

    def schedules(self) -> list[dict[str, Any]]:
        """The periodic tasks, as `soloist schedules --json` (one store read each)."""
        return schedules_snapshot(self.app)

    def revoke(self, task_id: str, terminate: bool) -> bool:
        return self.app.result(task_id).revoke(terminate=terminate)
