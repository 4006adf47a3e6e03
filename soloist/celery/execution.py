"""Running a Celery task call: decode Celery's message, run it through Celery's tracer.

Celery's tracer (`celery.app.trace.build_tracer`) is what Celery's own worker runs a task
with: it pushes `self.request`, sends the task signals, calls the handlers of custom Task
classes, stores STARTED (`track_started`), SUCCESS, FAILURE and RETRY with the app's
result backend, completes chords on it, and sends `link`/`link_error` callbacks and the
next task of a chain. Running it unchanged is what keeps task code unchanged; Soloist
supplies the rest: the lease and its keeper, time limits, revocation, settling.

How each way a run ends is settled:

* success, `Ignore`: acked.
* `Retry` (from `self.retry()`, `autoretry_for`): Celery's `Task.retry()` has already
  published the retry message, so the broker's `retry` acks this one.
* failure: the tracer stored it (and called the errbacks); the message is dead-lettered
  with the reason, as Soloist does with every failure, so it can be requeued.
* `Reject`: dead-lettered with the reason (requeue is not followed: a rejected message
  would loop).
* expired (`expires` passed) or revoked: recorded REVOKED, acked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container
from contextlib import nullcontext
from time import perf_counter as _clock
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from celery import signals, states
from celery.app.trace import build_tracer

from ..brokers.base import Delivery
from ..errors import DecodeError
from ..execution import Kind, Outcome, SoftLimit, TaskRunner, dead
from ..message import Message
from ..results.base import REVOKED
from ..task import Request, Task, reset_request, set_request
from . import protocol
from .control import node_name
from .limits import soft_limit
from .results import revoked_meta

if TYPE_CHECKING:
    from .app import CeleryApp


class CeleryTaskRunner(TaskRunner):
    """Turns deliveries of Celery messages into outcomes (one per thread running tasks)."""

    app: CeleryApp

    def __init__(
        self,
        app: CeleryApp,
        soft_limit: SoftLimit | None = None,
        started: Callable[[Delivery, Message, Task[Any, Any]], None] | None = None,
        revoked: Container[str] = frozenset(),
        default_soft_time_limit: float | None = None,
    ) -> None:
        super().__init__(app, soft_limit, started, revoked, default_soft_time_limit)
        self.celery = app.celery
        self.hostname = node_name()
        self._tracers: dict[str, Callable[..., Any]] = {}
        _process_init(self.celery, self.hostname)

    def decode(self, delivery: Delivery) -> tuple[Message, Task[Any, Any]] | Outcome:
        if (too_big := self.oversized(delivery)) is not None:
            return too_big
        try:
            call = protocol.decode(delivery.body, self.app.accept)
        except DecodeError as exc:
            return dead(f"undecodable message: {exc}")
        message = Message(call.task, call.args, call.kwargs, call.id, options={"celery": call})
        task = self.app.tasks.get(call.task)
        if task is None:
            return dead(f"unknown task {call.task!r}", message)
        if call.expires is not None and call.expires < time.time():
            return Outcome(Kind.REVOKED, call.id, call.task, reason="expired")
        return message, task

    def run(self, delivery: Delivery) -> Outcome:
        outcome = super().run(delivery)
        if outcome.kind is Kind.REVOKED and outcome.task_id:
            record = revoked_meta(outcome.task_id, outcome.reason)
            self.app.results.put(outcome.task_id, REVOKED, record, self.app.result_ttl)
        return outcome

    def call(
        self, delivery: Delivery, message: Message, task: Task[Any, Any], cpus: int | None = None
    ) -> Outcome:
        call: protocol.CeleryCall = message.options["celery"]
        tracer = self._tracers.get(call.task)
        if tracer is None:
            ctask = self.celery.tasks[call.task]
            tracer = self._tracers[call.task] = build_tracer(
                call.task,
                ctask,
                loader=self.celery.loader,
                hostname=self.hostname,
                app=self.celery,
            )
        call.request["hostname"] = self.hostname
        call.request["delivery_tag"] = delivery.id
        limit = call.timelimit[1] or task.options.soft_time_limit or self.default_soft_time_limit
        start = _clock()
        # Soloist's own request too: revoke's terminate stops the task it names.
        token = set_request(
            Request(call.id, call.task, call.args, call.kwargs, delivery.queue, 0,
                    delivery.delivery_count)
        )  # fmt: skip
        backend = self.app.deferring
        try:
            with (
                backend.deferring() if backend else nullcontext() as deferred,
                soft_limit(limit) if limit else nullcontext(),
            ):
                _, info, _, _ = tracer(call.id, call.args, call.kwargs, call.request)
        finally:
            reset_request(token)
        runtime = _clock() - start
        if info is None or info.state == states.IGNORED:
            # The SUCCESS record, if the backend left it to us, is stored with the batch.
            record = deferred.record if deferred is not None else None
            body = record[1] if record is not None and record[0] == call.id else None
            return Outcome(Kind.SUCCESS, call.id, call.task, body, runtime=runtime)
        exc = info.retval
        if info.state == states.RETRY:
            when = getattr(exc, "when", None)
            delay = float(when) if isinstance(when, (int, float)) else 0.0
            return Outcome(
                Kind.RETRY,
                call.id,
                call.task,
                delay=delay,
                runtime=runtime,
                reason=f"{type(exc).__name__}: {exc}"[:500],
            )
        how = "rejected" if info.state == states.REJECTED else "failed"
        return Outcome(
            Kind.FAILURE,
            call.id,
            call.task,
            runtime=runtime,
            reason=f"{how}: {type(exc).__name__}: {exc}"[:500],
        )

    def _finished(self, message: Message) -> Outcome | None:
        """For a redelivery: the state a worker that died before settling recorded."""
        stored = self.app.results.get(message.id)
        if stored is None or stored[0] not in states.READY_STATES:
            return None
        kind = Kind.SUCCESS if stored[0] == states.SUCCESS else Kind.REVOKED
        if stored[0] == states.FAILURE:
            kind = Kind.FAILURE
        return Outcome(kind, message.id, message.task, reason=f"already {stored[0]}")


_initialised: set[int] = set()


def _process_init(celery: Any, hostname: str) -> None:
    """Once per process that runs tasks: the signals Celery's worker sends before its
    first task (`worker_init`, then the solo pool's `worker_process_init`), which
    integrations hook: Django's fixup sets up its database handling there."""
    if id(celery) in _initialised:
        return
    _initialised.add(id(celery))
    signals.worker_init.send(sender=SimpleNamespace(app=celery, hostname=hostname))
    signals.worker_process_init.send(sender=hostname)
