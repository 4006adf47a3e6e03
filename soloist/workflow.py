"""Workflows, the worker's side: what happens after a step of a chain, group or chord ends.

A message sent by `soloist.canvas` carries its continuation in its options (`wf`):

    link   [signature]   sent when the call succeeds, its result prepended
    err    [signature]   sent when it fails for good, (task id, error) prepended
    chain  [signature]   the steps still to run; the next gets this one's result
    chord  {id, i, n, cb}  member i of n of chord `id`; `cb` the callback
    p      1             sent by a worker: it may be a second copy (see below)

The worker calls `proceed` for the tasks that ended (succeeded, failed for good, revoked or
dead-lettered) whose message has a `wf`, after their results are stored and before their
messages are acked. So a worker that dies in between leaves a message that is redelivered
and continued again, never a continuation lost; what makes continuing twice harmless:

* Every call's id is chosen by the producer, so a step sent twice has one id.
* A chord member adds its result to a set in the result store (`ResultStore.chord_add_many`,
  one call for the members a worker settles together): adding it again counts nothing, and
  only the member whose add completed the set is told (again, if it adds again), so one
  member sends the callback.
* So a message sent by a worker (`p`) may be a second copy (the worker that sent it died
  before its ack, and its redelivery sent it again). Before it runs, the task runner
  claims the run for its broker message id (`put_new` of `<task id>:run`): the first copy
  taken wins and runs (again only when it is redelivered: its worker died, or the broker
  handed the same message out again after it finished, which the stored result shows);
  any other copy is acked without running (`TaskRunner._claimed`).

What is left: a step that kills `max_deliveries` workers is dead-lettered by the broker,
which records nothing, so its workflow waits; a failed step requeued from the dead letters
runs again only where the broker keeps its message id (not SQLite), and does not resume
the steps after it (they were recorded failed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import LimitExceeded
from .execution import Kind, Outcome
from .results.base import FAILURE, REVOKED
from .results.record import failure_record
from .workflow_wire import Item, items_for

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("soloist.workflow")

#: Outcomes that end a call for good: a workflow goes on after each.
FINAL_KINDS = frozenset({Kind.SUCCESS, Kind.FAILURE, Kind.DEAD, Kind.REVOKED})


class _Plan:
    """What the continuations of a batch of tasks amount to: messages and records."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.sends: list[Item] = []
        self.records: list[tuple[str, str, bytes]] = []
        #: Chord members to add: `chord_add_many` items and the chords' callbacks.
        self.joins: list[tuple[tuple[str, int, int, bytes], dict[str, Any]]] = []

    def join(self, chord: dict[str, Any], member: dict[str, Any]) -> None:
        item = (str(chord["id"]), int(chord["i"]), int(chord["n"]), self.app.codec.dumps(member))
        self.joins.append((item, dict(chord["cb"])))


def proceed(app: App, ended: Sequence[Outcome]) -> None:
    """Send what comes after each of these workflow tasks.

    `ended` are outcomes with a `workflow` and a final kind, their results already stored.
    Raises if the broker or the store fails: the caller has not acked, so the task is
    redelivered and continued again (what it sends again does not run twice)."""
    plan = _Plan(app)
    for outcome in ended:
        if not outcome.workflow or outcome.kind not in FINAL_KINDS:
            continue
        try:
            _continue(plan, outcome)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            log.error("task %s: malformed workflow options dropped: %r", outcome.task_id, exc)
    _join(plan)
    if plan.records:
        app.results.put_many(plan.records, app.result_ttl)
    _send(plan)


def _continue(plan: _Plan, outcome: Outcome) -> None:
    flow: dict[str, Any] = outcome.workflow or {}
    chord = flow.get("chord")
    if outcome.kind is Kind.SUCCESS:
        value = _value(plan.app, outcome)
        for link in flow.get("link", ()):
            plan.sends += items_for(link, (value,), resent=True)
        chain = flow.get("chain")
        if chain:
            plan.sends += items_for(chain[0], (value,), chain[1:], resent=True)
        if chord:
            plan.join(chord, {"v": value})
        return
    error = _error(plan.app, outcome)
    for errback in flow.get("err", ()):
        plan.sends += items_for(errback, (outcome.task_id, error), resent=True)
    for step in flow.get("chain", ()):
        _stop(plan, step, error, revoked=outcome.kind is Kind.REVOKED)
    if chord:
        plan.join(chord, {"e": error, "id": outcome.task_id})


def _join(plan: _Plan) -> None:
    """Add the members' results to their chords, in one call; the member that completes a
    chord sends its callback (or, if a member failed, records the callback as failed and
    sends its errbacks)."""
    app = plan.app
    while plan.joins:  # a failed chord fails the chord it is a member of: another round
        joins, plan.joins = plan.joins, []
        told = app.results.chord_add_many([item for item, _ in joins], app.result_ttl)
        for (item, callback), bodies in zip(joins, told, strict=True):
            if bodies is None:
                continue
            try:
                _complete(plan, callback, [app.codec.loads(b) for b in bodies])
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                log.error("chord %s: malformed workflow options dropped: %r", item[0], exc)


def _complete(plan: _Plan, callback: dict[str, Any], members: list[dict[str, Any]]) -> None:
    failed = next(((i, m) for i, m in enumerate(members) if "e" in m), None)
    if failed is None:
        plan.sends += items_for(callback, ([m["v"] for m in members],), resent=True)
        return
    index, member = failed
    error = {
        "exc_type": "ChordError",
        "message": f"chord member {index} ({member['id']}) failed: "
        f"{member['e']['exc_type']}: {member['e']['message']}",
    }
    _stop(plan, callback, error, revoked=False, errbacks=True)


def _stop(
    plan: _Plan,
    step: dict[str, Any],
    error: dict[str, str],
    *,
    revoked: bool,
    errbacks: bool = False,
    join: bool = True,
) -> None:
    """Record a call that will never run as failed (or revoked) with `error`, and what is
    chained after it too, so that waiting for any of them does not hang. A chord member
    among them is added to its chord as failed (unless `join` is False: the chord itself
    is being stopped), so that the chord does not wait for it."""
    if "group" in step:  # a chord never started: its members, then its callback
        for member in step["group"]:
            _stop(plan, member, error, revoked=revoked, join=False)
        _stop(plan, step["cb"], error, revoked=revoked, join=join)
        return
    app = plan.app
    if revoked:
        body = app.codec.dumps({"revoked": time.time(), "terminate": False})
        plan.records.append((step["id"], REVOKED, body))
    else:
        plan.records.append((step["id"], FAILURE, _failure_body(app, error)))
    flow = step.get("wf", {})
    if errbacks:
        for errback in flow.get("err", ()):
            plan.sends += items_for(errback, (step["id"], error), resent=True)
    for chained in flow.get("chain", ()):
        _stop(plan, chained, error, revoked=revoked, join=join)
    if join and "chord" in flow:
        plan.join(flow["chord"], {"e": error, "id": step["id"]})


def _send(plan: _Plan) -> None:
    """Publish the plan's messages in one batch. One too large to send (a huge result
    passed on) fails its call instead of failing the batch again and again."""
    if not plan.sends:
        return
    try:
        plan.app.send_many(plan.sends)
        return
    except LimitExceeded:
        pass
    for message, queue, delay, priority in plan.sends:
        try:
            plan.app.send(message, queue, delay=delay, priority=priority)
        except LimitExceeded as exc:
            error = {"exc_type": type(exc).__name__, "message": str(exc)}
            body = _failure_body(plan.app, error)
            plan.app.results.put(message.id, FAILURE, body, plan.app.result_ttl)


def _value(app: App, outcome: Outcome) -> Any:
    body = outcome.record
    if body is None:  # finished before this copy was taken: read what was stored
        stored = app.results.get(outcome.task_id)
        body = stored[1] if stored is not None else None
    return None if body is None else app.codec.loads(body).get("value")


def _error(app: App, outcome: Outcome) -> dict[str, str]:
    """The error a failed, revoked or dead-lettered call passes on to its errbacks."""
    if outcome.kind is Kind.REVOKED:
        return {"exc_type": "TaskRevoked", "message": f"task {outcome.task_id} {outcome.reason}"}
    if outcome.kind is Kind.DEAD:
        return {"exc_type": "DeadLettered", "message": outcome.reason}
    body = outcome.record
    if body is None:
        stored = app.results.get(outcome.task_id)
        body = stored[1] if stored is not None else None
    record = app.codec.loads(body) if body is not None else {}
    return {
        "exc_type": str(record.get("exc_type", "Exception")),
        "message": str(record.get("message", outcome.reason)),
    }


def _failure_body(app: App, error: dict[str, str]) -> bytes:
    return app.codec.dumps(failure_record(error["exc_type"], error["message"], ""))
