"""Running one delivery: decode it, find its task, call it, and decide what becomes of it.

`TaskRunner.run` never raises for anything the message or the task did: every way a
delivery can end is an `Outcome`, which the worker then settles (ack, retry, dead-letter)
and records.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
import traceback
from collections.abc import Callable, Container
from contextlib import AbstractContextManager
from dataclasses import dataclass
from time import perf_counter as _clock
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Protocol

from .brokers.base import Delivery
from .errors import (
    DecodeError,
    LimitExceeded,
    Retry,
    SoftTimeLimitExceeded,
    TaskTerminated,
    WorkerInterrupt,
)
from .limits import SLOT_RETRY, Limits
from .message import Message
from .results.base import FAILURE, PENDING, RETRY, REVOKED, SUCCESS
from .results.record import failure_record, success_record
from .task import Request, Task, reset_request, set_request

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("soloist.worker")

#: A context manager that raises `SoftTimeLimitExceeded` inside the block after N seconds.
SoftLimit = Callable[[float], AbstractContextManager[object]]

_new_tuple = tuple.__new__

#: Longest traceback text kept with a failure.
_MAX_TRACEBACK = 8000


#: The suffix of the record that claims the run of a workflow step for one copy of its
#: message (see `TaskRunner._claimed`), and the reason a second copy is settled unrun.
RUN_CLAIM = ":run"
DUPLICATE = "a copy of a workflow step another delivery claimed: settled without running"


class Kind(enum.Enum):
    SUCCESS = "succeeded"
    RETRY = "retried"
    FAILURE = "failed"
    DEAD = "dead-lettered"  # never ran: the message itself was unusable
    LOST = "lost"  # the process running it died: it is redelivered, its count raised
    REVOKED = "revoked"  # skipped, expired, or stopped while running: acked, never run again
    DEFERRED = "deferred"  # held back by a cluster-wide limit: put back, not a retry
    RELEASED = "given back"  # never started (the worker stopped while it waited for CPUs)

    # Members are singletons: hashed by identity in C, not by name in Enum's Python
    # __hash__ (the worker looks an outcome's kind up in a map or set per task).
    __hash__ = object.__hash__


#: The state recorded for an outcome that carries a record (`Outcome.record`).
STATE_OF = {
    Kind.SUCCESS: SUCCESS,
    Kind.RETRY: RETRY,
    Kind.FAILURE: FAILURE,
    Kind.DEAD: FAILURE,
    Kind.REVOKED: REVOKED,
}
#: The reason of a REVOKED outcome whose `expires` time passed before it started.
EXPIRED = "expired"


# Not frozen: one per task run, and a frozen dataclass costs three times as much to make.
@dataclass(slots=True)
class Outcome:
    kind: Kind
    task_id: str = ""
    task: str = ""
    #: The encoded record to store for the task (see results.record), or None; its
    #: state is STATE_OF[kind].
    record: bytes | None = None
    #: Seconds until the retry (RETRY only).
    delay: float = 0.0
    #: Why it failed or was dead-lettered.
    reason: str = ""
    runtime: float = 0.0
    #: The message's workflow options (see soloist.workflow); None for a plain task.
    workflow: dict[str, Any] | None = None


#: Outcomes after which the task is over for good (its unique claim ends).
_FINAL_KINDS = frozenset({Kind.SUCCESS, Kind.FAILURE, Kind.REVOKED})


def dead(reason: str, message: Message | None = None) -> Outcome:
    """A message that will never run, with nothing to record (see `TaskRunner._dead`)."""
    if message is None:
        return Outcome(Kind.DEAD, reason=reason)
    return Outcome(
        Kind.DEAD, message.id, message.task, reason=reason, workflow=message.options.get("wf")
    )


class CpuGrant(Protocol):
    """CPUs held for one run, until released."""

    cpus: int

    def release(self) -> None: ...


class CpuGate(Protocol):
    """Where tasks declaring `cpus` wait for them (soloist.worker.cpus.CpuBudget)."""

    #: Asked while waiting: once true, the wait ends without a grant.
    stopping: Callable[[], bool] | None

    def acquire(self, want: int) -> CpuGrant | None:
        """Wait for `want` CPUs and take them; None if the wait was given up."""


class TaskRunner:
    """Turns deliveries into outcomes for one app; one per thread that runs tasks.

    `soft_limit` is how the pool running it raises `SoftTimeLimitExceeded` in a task (a
    signal in a main thread, an async exception in a thread); None has no soft limits."""

    def __init__(
        self,
        app: App,
        soft_limit: SoftLimit | None = None,
        started: Callable[[Delivery, Message, Task[Any, Any]], None] | None = None,
        revoked: Container[str] = frozenset(),
        default_soft_time_limit: float | None = None,
    ) -> None:
        self.app = app
        self.soft_limit = soft_limit
        #: The worker's soft limit, for tasks that set none of their own.
        self.default_soft_time_limit = default_soft_time_limit
        self.started = started
        #: Task ids revoked, kept up to date by the worker's keeper (soloist.worker.revocation).
        self.revoked = revoked
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()
        #: The CPU budget tasks declaring `cpus` wait for; None runs them at once.
        self.cpus: CpuGate | None = None

    def oversized(self, delivery: Delivery) -> Outcome | None:
        """The DEAD outcome of a message over the app's size limit; None within it."""
        if len(delivery.body) > self.app.max_message_size:
            return dead(
                f"message of {len(delivery.body)} bytes is over the size limit "
                f"of {self.app.max_message_size}"
            )
        return None

    def decode(self, delivery: Delivery) -> tuple[Message, Task[Any, Any]] | Outcome:
        """The message and its task, or the DEAD outcome saying why there are none."""
        app, body = self.app, delivery.body
        if len(body) > app.max_message_size and (too_big := self.oversized(delivery)):
            return too_big
        try:
            # `App.decode`, without its call where there is no signature to check.
            if app.signer is None:
                message = Message.decode(body, app.codec, app.max_depth)
            else:
                message = app.decode(body)
        except DecodeError as exc:
            if exc.task_id:  # the envelope named its call: record why it will never run
                return self._dead(Message(exc.task, id=exc.task_id), f"undecodable message: {exc}")
            return dead(f"undecodable message: {exc}")
        task = self.app.tasks.get(message.task)
        if task is None:
            return self._dead(message, f"unknown task {message.task!r}")
        reason = task.misfit(message.args, message.kwargs)
        if reason is not None:
            return self._dead(message, reason)
        return message, task

    def _dead(self, message: Message, reason: str) -> Outcome:
        """A message that will never run but whose task id is known: its FAILURE is
        recorded with the reason, so `get()` raises at once instead of timing out (a
        `TaskError` of type DeadLettered, as workflows pass it to errbacks)."""
        record = None
        if not message.options.get("ignore_result"):
            record = self.app.codec.dumps(failure_record("DeadLettered", reason, ""))
        flow = message.options.get("wf")
        return Outcome(Kind.DEAD, message.id, message.task, record, reason=reason, workflow=flow)

    def call(
        self, delivery: Delivery, message: Message, task: Task[Any, Any], cpus: int | None = None
    ) -> Outcome:
        """Call the task (granted `cpus`) and classify how it ended."""
        # The tuple made directly: Request(...) goes through a Python-level __new__ that
        # costs twice as much, on every task run.
        request = _new_tuple(
            Request,
            (
                message.id,
                task.name,
                message.args,
                message.kwargs,
                delivery.queue,
                delivery.retries,
                delivery.delivery_count,
                False,
                cpus,
            ),
        )
        opts = task.options
        limit = opts.soft_time_limit or self.default_soft_time_limit
        start = _clock()
        token = set_request(request)
        try:
            if limit and self.soft_limit:
                with self.soft_limit(limit):
                    value = task.run(message.args, message.kwargs)
                    if type(value) is CoroutineType:  # (cannot be subclassed)
                        value = self._await(value, limit)
            else:  # no guard to enter and leave
                value = task.run(message.args, message.kwargs)
                if type(value) is CoroutineType:  # (cannot be subclassed)
                    value = self._await(value, limit)
        except Retry as exc:
            return self._retry(delivery, message, task, exc, exc.exc, _clock() - start)
        except WorkerInterrupt:
            raise
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt and GeneratorExit from a task are its failure
            # too: they must not end the worker, or stop the fleet with its exit code.
            if isinstance(exc, SystemExit) and os.getpid() != self._pid:
                raise  # in a child the task forked: its exit, which the pool's guard ends
            if opts.autoretry_for and isinstance(exc, opts.autoretry_for):
                return self._retry(delivery, message, task, None, exc, _clock() - start)
            return self._failure(message, task, exc, _clock() - start)
        finally:
            reset_request(token)
        options = message.options
        if (opts.ignore_result or options.get("ignore_result", False)) and "wf" not in options:
            # (a workflow passes the value on)
            return Outcome(Kind.SUCCESS, message.id, task.name, None, 0.0, "", _clock() - start)
        try:
            result = self._encode(success_record(value))
        except WorkerInterrupt:
            raise
        except BaseException as exc:  # a __reduce__ or __str__ of the value may raise anything
            return self._failure(message, task, exc, _clock() - start)
        return Outcome(Kind.SUCCESS, message.id, task.name, result, 0.0, "", _clock() - start)

    def _await(self, coro: Any, limit: float | None) -> Any:
        # One event loop for the runner's life, so async resources (clients, pools)
        # created by one task can be reused by the next.
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        if limit:
            coro = asyncio.wait_for(coro, limit)
        try:
            return self._loop.run_until_complete(coro)
        except asyncio.TimeoutError:
            raise SoftTimeLimitExceeded(f"soft time limit of {limit}s exceeded") from None

    def _retry(
        self,
        delivery: Delivery,
        message: Message,
        task: Task[Any, Any],
        request: Retry | None,
        cause: BaseException | None,
        runtime: float,
    ) -> Outcome:
        opts = task.options
        limit = opts.max_retries
        if request is not None and request.max_retries is not None:
            limit = request.max_retries
        if limit is not None and delivery.retries >= limit:
            exc = cause or RuntimeError(f"gave up after {delivery.retries} retries")
            return self._failure(message, task, exc, runtime, f"after {delivery.retries} retries")
        delay = (
            request.countdown
            if request and request.countdown is not None
            else opts.backoff(delivery.retries)
        )
        reason = describe(cause) if cause else "retry requested"
        record = None  # RETRY is recorded while the retry waits
        if not (opts.ignore_result or message.options.get("ignore_result")):
            retries, eta = delivery.retries + 1, time.time() + delay
            record = self.app.codec.dumps({"reason": reason, "retries": retries, "eta": eta})
        return Outcome(
            Kind.RETRY, message.id, task.name, record, delay=delay, runtime=runtime, reason=reason
        )

    def _failure(
        self,
        message: Message,
        task: Task[Any, Any],
        exc: BaseException,
        runtime: float,
        when: str = "",
    ) -> Outcome:
        try:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        except WorkerInterrupt:
            raise
        except BaseException:
            text = describe(exc)
        record = failure_record(
            type(exc).__name__, _text(exc)[:_MAX_TRACEBACK], text[-_MAX_TRACEBACK:]
        )
        reason = f"failed{' ' + when if when else ''}: {describe(exc)}"
        return Outcome(
            Kind.FAILURE,
            message.id,
            task.name,
            self.app.codec.dumps(record),
            reason=reason,
            runtime=runtime,
        )

    def _encode(self, record: dict[str, Any]) -> bytes:
        """Serialize a result record; over the app's result size limit is an error."""
        try:
            body = self.app.codec.dumps(record)
        except (TypeError, ValueError, OverflowError) as exc:
            raise type(exc)(f"the task's return value cannot be serialized: {_text(exc)}") from None
        except WorkerInterrupt:
            raise
        except BaseException as exc:  # a __reduce__ (pickle) or default hook that raises
            raise TypeError(
                f"the task's return value cannot be serialized: {describe(exc)}"
            ) from None
        if len(body) > self.app.max_result_size:
            raise LimitExceeded(
                f"result of {len(body)} bytes is over the limit of {self.app.max_result_size}"
            )
        return body

    def run(self, delivery: Delivery) -> Outcome:
        """Run one delivery to its outcome."""
        decoded = self.decode(delivery)
        if not isinstance(decoded, tuple):  # (one that fails would look __class__ up too)
            return decoded
        message, task = decoded
        if task.limits is not None:
            return self._limited(delivery, message, task, task.limits)
        if "wf" in message.options:
            return self._flow(delivery, message, task)
        return self._execute(delivery, message, task, False)  # a plain call

    def _flow(self, delivery: Delivery, message: Message, task: Task[Any, Any]) -> Outcome:
        flow = message.options.get("wf")
        again = False
        # A workflow step sent by a worker ("p") may be a second copy (see soloist.workflow).
        if flow and "p" in flow:
            claim = self._claimed(delivery, message)
            if claim is False:
                return Outcome(Kind.SUCCESS, message.id, task.name, reason=DUPLICATE)
            again = claim is None
        outcome = self._execute(delivery, message, task, again)
        if flow:
            outcome.workflow = flow
        return outcome

    def _claimed(self, delivery: Delivery, message: Message) -> bool | None:
        """Claim the run of a workflow step for this message, by its broker id: True for
        the first copy taken, None when this message claimed it before (it is handed out
        again), False for any other copy of it."""
        key, mine = message.id + RUN_CLAIM, delivery.id.encode()
        if self.app.results.put_new(key, PENDING, mine, self.app.result_ttl):
            return True
        held = self.app.results.get(key)
        return None if held is None or held[1] == mine else False

    def _limited(
        self,
        delivery: Delivery,
        message: Message,
        task: Task[Any, Any],
        limits: Limits,
    ) -> Outcome:
        """Run a task with cluster-wide limits: admitted by the store first, or deferred;
        its slot (and, once it is over, its unique claim) freed after."""
        store, args, kwargs = self.app.results, message.args, message.kwargs
        if limits.gated:
            try:
                wait = limits.admit(store, message.id, args, kwargs)
            except Exception as exc:
                wait, why = SLOT_RETRY, f"limits unreadable: {describe(exc)}"
            else:
                why = "held back by its rate or concurrency limit"
            if wait:
                return Outcome(Kind.DEFERRED, message.id, task.name, delay=wait, reason=why)
        outcome = self._flow(delivery, message, task)
        try:
            limits.finish(store, message.id, args, kwargs, outcome.kind in _FINAL_KINDS)
        except Exception as exc:  # the slot lapses by itself; the unique claim expires
            log.warning("task %s[%s]: limits not released: %s", task.name, message.id, exc)
        return outcome

    def _execute(
        self, delivery: Delivery, message: Message, task: Task[Any, Any], again: bool
    ) -> Outcome:
        if message.id in self.revoked:
            return Outcome(Kind.REVOKED, message.id, task.name, reason="revoked before it started")
        expires = message.options.get("expires") if message.options else None
        if expires is not None and time.time() > expires:
            record = self.app.codec.dumps({"revoked": time.time(), "reason": EXPIRED})
            return Outcome(Kind.REVOKED, message.id, task.name, record, reason=EXPIRED)
        # Handed out again (a worker died, or a broker delivered it twice): it may have
        # finished already.
        if delivery.delivery_count > 1 or again:
            finished = self._finished(message)
            if finished is not None:
                return finished
        want = task.options.cpus
        if want and self.cpus is not None:
            return self._call_granted(delivery, message, task, self.cpus, want)
        if self.started is not None:
            self.started(delivery, message, task)
        try:
            return self.call(delivery, message, task, want)
        except TaskTerminated:
            return Outcome(Kind.REVOKED, message.id, task.name, reason="revoked while running")

    def _call_granted(
        self, delivery: Delivery, message: Message, task: Task[Any, Any], gate: CpuGate, want: int
    ) -> Outcome:
        """Wait for the task's CPUs (not yet running: no time limit, no "started"), then
        call it holding them."""
        grant = gate.acquire(want)
        if grant is None:
            return Outcome(Kind.RELEASED, message.id, task.name, reason="the worker is stopping")
        try:
            if message.id in self.revoked:  # revoked while it waited
                reason = "revoked before it started"
                return Outcome(Kind.REVOKED, message.id, task.name, reason=reason)
            if self.started is not None:
                self.started(delivery, message, task)
            return self.call(delivery, message, task, grant.cpus)
        except TaskTerminated:
            return Outcome(Kind.REVOKED, message.id, task.name, reason="revoked while running")
        finally:
            grant.release()

    def _finished(self, message: Message) -> Outcome | None:
        """For a redelivery: the outcome already recorded by a worker that died before it
        settled the message, so the task does not run twice."""
        stored = self.app.results.get(message.id)
        if stored is None or stored[0] not in (SUCCESS, FAILURE):
            return None
        if stored[0] == SUCCESS:
            return Outcome(Kind.SUCCESS, message.id, message.task)
        record = self.app.codec.loads(stored[1])
        reason = f"failed: {record.get('exc_type')}: {record.get('message')}"
        return Outcome(Kind.FAILURE, message.id, message.task, reason=reason)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None


def describe(exc: BaseException) -> str:
    """`Type: message` of an exception, short, whatever its __str__ does."""
    return f"{type(exc).__name__}: {_text(exc)}"[:500]


def _text(exc: BaseException) -> str:
    """str(exc), or why there is none: task code may define a __str__ that raises."""
    try:
        return str(exc)
    except WorkerInterrupt:
        raise
    except BaseException as error:
        return f"<str() of the exception raised {type(error).__name__}>"
