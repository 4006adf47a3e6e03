"""Workflows, the producer's side: signatures, and the chains, groups and chords built of them.

A `Signature` is one task call put in a box to be sent later: `add.s(2)` (partial: the
result of the step before is prepended to its arguments) or `add.si(2, 3)` (immutable).
Workflows are sent as ordinary messages whose options carry what happens next, under the
`wf` key (see `soloist.workflow` for the worker's side), so nothing polls:

* `chain(a, b, c)` / `a | b | c`: `a` is sent with `b` and `c` in its options; the worker
  that settles `a` sends `b` with `a`'s result, and so on.
* `group(sigs)`: every member sent in one batch.
* `chord(group, callback)` / `group | callback`: each member carries the chord's id, its
  index, the size and the callback; the result store counts the members (a set, so a
  redelivered member counts once) and the member that completes the set sends the callback.

Every call's id is chosen here, before anything is sent (`freeze`), so the handle of a
workflow knows all of its task ids, and a step a worker sends twice (it died in between)
keeps its id: the copy finds the first one's result and does not run again.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from .errors import ConfigurationError
from .message import Message
from .results.workflow import ChainResult, ChordResult, GroupResult

if TYPE_CHECKING:
    from .app import App
    from .results.handle import Result

R = TypeVar("R")
S = TypeVar("S")

#: The built-in task that runs one chunk of `Task.chunks` (every app registers it).
CHUNK_TASK = "soloist.chunk"


def register_builtins(app: App) -> None:
    """Register the tasks workflows need on `app` (a worker imports the same app)."""

    def chunk(task: str, calls: list[list[Any]]) -> list[Any]:
        """Run a chunk of calls of `task`, one after the other, in this worker."""
        target = app.tasks[task]
        return [target.run(tuple(args), {}) for args in calls]

    app.task(name=CHUNK_TASK)(chunk)


class Signature(Generic[R]):
    """One task call, ready to be sent or to be a step of a workflow.

    `R` is the task's return type. Its arguments are checked against the task's only for
    `si()` (see `Task.s`)."""

    def __init__(
        self,
        app: App,
        task: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        immutable: bool = False,
        queue: str | None = None,
        priority: int = 0,
    ) -> None:
        self.app = app
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.immutable = immutable
        self.queue = queue or app.default_queue
        self.priority = priority
        self.countdown = 0.0
        self.id: str | None = None
        self.links: list[Signature[Any]] = []
        self.errbacks: list[Signature[Any]] = []

    def __repr__(self) -> str:
        args = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.task}.{'si' if self.immutable else 's'}({args})"

    def clone(self) -> Signature[R]:
        """A copy, without an id: sending it again makes a new call."""
        twin = copy.copy(self)
        twin.id, twin.links, twin.errbacks = None, list(self.links), list(self.errbacks)
        return twin

    def set(
        self,
        *,
        queue: str | None = None,
        countdown: float | None = None,
        priority: int | None = None,
        task_id: str | None = None,
    ) -> Signature[R]:
        """Set how the call is sent; returns the signature itself."""
        if queue is not None:
            self.queue = queue
        if countdown is not None:
            self.countdown = max(float(countdown), 0.0)
        if priority is not None:
            self.priority = priority
        if task_id is not None:
            self.id = task_id
        return self

    def link(self, callback: Signature[Any]) -> Signature[Any]:
        """Send `callback` when this call succeeds, with its result prepended to the
        callback's arguments (unless the callback is immutable). Returns `callback`."""
        self.links.append(callback)
        return callback

    def link_error(self, errback: Signature[Any]) -> Signature[Any]:
        """Send `errback` when this call fails for good (no retries left, revoked, or its
        message unusable), with the failed task's id and its error (a map of `exc_type` and
        `message`) prepended to the errback's arguments. Returns `errback`."""
        self.errbacks.append(errback)
        return errback

    def freeze(self) -> str:
        """The call's task id, chosen now if it has none yet."""
        if self.id is None:
            self.id = secrets.token_hex(16)
        return self.id

    def to_dict(self) -> dict[str, Any]:
        """The signature as message options carry it (frozen first)."""
        data: dict[str, Any] = {"task": self.task, "id": self.freeze(), "queue": self.queue}
        if self.args:
            data["args"] = list(self.args)
        if self.kwargs:
            data["kwargs"] = self.kwargs
        if self.immutable:
            data["immutable"] = True
        if self.priority:
            data["priority"] = self.priority
        if self.countdown:
            data["countdown"] = self.countdown
        flow = self._flow()
        if flow:
            data["wf"] = flow
        return data

    def check(self, args: tuple[Any, ...] | None = None) -> None:
        """Raise TypeError, before anything is sent, if the call (with `args` instead of
        the signature's own) would not fit a task registered in this process."""
        task = self.app.tasks.get(self.task)
        misfit = task.misfit(self.args if args is None else args, self.kwargs) if task else None
        if misfit is not None:
            raise TypeError(misfit)

    @classmethod
    def from_dict(cls, app: App, data: dict[str, Any]) -> Signature[Any]:
        """The signature `to_dict` gave (with its id, links and errbacks)."""
        sig: Signature[Any] = cls(
            app,
            data["task"],
            tuple(data.get("args", ())),
            data.get("kwargs"),
            immutable=bool(data.get("immutable")),
            queue=data.get("queue"),
            priority=int(data.get("priority", 0)),
        )
        sig.set(countdown=data.get("countdown"), task_id=data.get("id"))
        flow = data.get("wf", {})
        sig.links = [cls.from_dict(app, d) for d in flow.get("link", ())]
        sig.errbacks = [cls.from_dict(app, d) for d in flow.get("err", ())]
        return sig

    def _flow(self) -> dict[str, Any]:
        # A callback without an id of its own gets a new one each time it is sent: one
        # signature can be the link of many calls.
        flow: dict[str, Any] = {}
        if self.links:
            flow["link"] = [(s if s.id else s.clone()).to_dict() for s in self.links]
        if self.errbacks:
            flow["err"] = [(s if s.id else s.clone()).to_dict() for s in self.errbacks]
        return flow

    def _item(
        self, args: tuple[Any, ...] = (), flow: dict[str, Any] | None = None
    ) -> tuple[Message, str, float, int]:
        """What to publish for this call: (message, queue, delay, priority)."""
        call_args = self.args if self.immutable else (*args, *self.args)
        self.check(call_args)
        data = self.to_dict()
        merged = {**data.get("wf", {}), **(flow or {})}
        message = Message(self.task, call_args, dict(self.kwargs), id=data["id"])
        # Even empty: a workflow's calls store their results, `ignore_result` or not.
        message.options["wf"] = merged
        return message, self.queue, self.countdown, self.priority

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        link: Signature[Any] | None = None,
        link_error: Signature[Any] | None = None,
        **options: Any,
    ) -> Result[R]:
        """Send the call; `args` are prepended to the signature's (unless immutable) and
        `kwargs` update its own. `options` are those of `set`."""
        sig = self.clone()
        sig.id = self.id  # a task id given with set() stays
        sig.set(**options)
        if kwargs:
            sig.kwargs.update(kwargs)
        if link is not None:
            sig.link(link)
        if link_error is not None:
            sig.link_error(link_error)
        message, queue, delay, priority = sig._item(tuple(args))
        self.app.send(message, queue, delay=delay, priority=priority)
        return self.app.result(message.id)

    def delay(self, *args: Any, **kwargs: Any) -> Result[R]:
        """Send the call with these arguments prepended (see `apply_async`)."""
        return self.apply_async(args, kwargs)

    @overload
    def __or__(self, other: Signature[S]) -> Chain[S]: ...
    @overload
    def __or__(self, other: Chain[S]) -> Chain[S]: ...
    def __or__(self, other: Signature[Any] | Chain[Any]) -> Chain[Any]:
        return Chain([self, *_steps(other)])


class Chain(Generic[R]):
    """Calls run one after the other, each getting the result of the one before; `R` is
    the last one's return type."""

    def __init__(self, steps: Iterable[Signature[Any]]) -> None:
        self.steps = [_signature(s) for s in steps]
        if not self.steps:
            raise ConfigurationError("a chain needs at least one step")

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.steps))

    @overload
    def __or__(self, other: Signature[S]) -> Chain[S]: ...
    @overload
    def __or__(self, other: Chain[S]) -> Chain[S]: ...
    def __or__(self, other: Signature[Any] | Chain[Any]) -> Chain[Any]:
        return Chain([*self.steps, *_steps(other)])

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        *,
        link: Signature[Any] | None = None,
        link_error: Signature[Any] | None = None,
    ) -> ChainResult[R]:
        """Send the first step (with `args` prepended); the workers send the rest.

        `link` runs after the last step succeeds; `link_error` once, for the step that
        fails (the steps after it are recorded as failed with the same error)."""
        steps = [s.clone() for s in self.steps]
        if link is not None:
            steps[-1].link(link)
        if link_error is not None:
            for step in steps:
                step.link_error(link_error)
        for step in steps[1:]:
            if step.immutable:  # the others get their first arguments at run time
                step.check()
        ids = [s.freeze() for s in steps]
        rest = [s.to_dict() for s in steps[1:]]
        message, queue, delay, priority = steps[0]._item(
            tuple(args), {"chain": rest} if rest else None
        )
        self.steps[0].app.send(message, queue, delay=delay, priority=priority)
        return ChainResult(self.steps[0].app, ids)

    def delay(self, *args: Any) -> ChainResult[R]:
        return self.apply_async(args)


class Group(Generic[R]):
    """Calls run in parallel, on any workers; `R` is the members' return type."""

    def __init__(self, members: Iterable[Signature[R]]) -> None:
        self.members = [_signature(s) for s in members]

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.members))})"

    def __or__(self, callback: Signature[S]) -> Chord[S]:
        return Chord(self, callback)

    def apply_async(self, args: tuple[Any, ...] | list[Any] = ()) -> GroupResult[R]:
        """Send every member in one batch (with `args` prepended to each)."""
        members = [s.clone() for s in self.members]
        if not members:
            return GroupResult(None, [])
        app = members[0].app
        app.send_many([m._item(tuple(args)) for m in members])
        return GroupResult(app, [app.result(m.freeze()) for m in members])

    def delay(self, *args: Any) -> GroupResult[R]:
        return self.apply_async(args)


class Chord(Generic[R]):
    """A group, then a callback that gets the list of the members' results (in order),
    sent once, by the worker that settles the last member. `R` is the callback's type.

    If a member fails (or is revoked), the callback does not run: it is recorded as failed
    with a `ChordError` naming the first failed member, and its `link_error` runs."""

    def __init__(self, header: Group[Any] | Iterable[Signature[Any]], body: Signature[R]) -> None:
        self.header = header if isinstance(header, Group) else Group(header)
        self.body = _signature(body)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    def apply_async(self, args: tuple[Any, ...] | list[Any] = ()) -> ChordResult[R]:
        """Send the members (with `args` prepended to each) in one batch."""
        body = self.body.clone()
        app = body.app
        chord_id = body.freeze()
        members = [s.clone() for s in self.header.members]
        if not members:  # nothing to wait for: the callback runs now, on an empty list
            message, queue, delay, priority = body._item(([],))
            app.send(message, queue, delay=delay, priority=priority)
            return ChordResult(app, chord_id, GroupResult(app, []))
        if body.immutable:
            body.check()
        callback = body.to_dict()
        size = len(members)
        app.send_many(
            [
                m._item(tuple(args), {"chord": {"id": chord_id, "i": i, "n": size, "cb": callback}})
                for i, m in enumerate(members)
            ]
        )
        return ChordResult(
            app, chord_id, GroupResult(app, [app.result(m.freeze()) for m in members])
        )

    def delay(self, *args: Any) -> ChordResult[R]:
        return self.apply_async(args)


# Typed for up to six steps; `|` keeps the last step's type for any length.
@overload
def chain(a: Signature[R], /) -> Chain[R]: ...
@overload
def chain(a: Signature[Any], b: Signature[R], /) -> Chain[R]: ...
@overload
def chain(a: Signature[Any], b: Signature[Any], c: Signature[R], /) -> Chain[R]: ...
@overload
def chain(
    a: Signature[Any], b: Signature[Any], c: Signature[Any], d: Signature[R], /
) -> Chain[R]: ...
@overload
def chain(
    a: Signature[Any], b: Signature[Any], c: Signature[Any], d: Signature[Any], e: Signature[R], /
) -> Chain[R]: ...
@overload
def chain(*steps: Signature[Any]) -> Chain[Any]: ...
def chain(*steps: Signature[Any]) -> Chain[Any]:
    """Run the steps one after another, each getting the result of the one before."""
    return Chain(steps)


@overload
def group(members: Iterable[Signature[R]], /) -> Group[R]: ...
@overload
def group(*members: Signature[R]) -> Group[R]: ...
def group(*members: Any) -> Group[Any]:
    """Run the members in parallel: `group([a, b])` or `group(a, b)`."""
    if len(members) == 1 and not isinstance(members[0], Signature):
        return Group(members[0])
    return Group(members)


def chord(header: Group[Any] | Iterable[Signature[Any]], body: Signature[R]) -> Chord[R]:
    """Run the header's members in parallel, then `body` with the list of their results."""
    return Chord(header, body)


def _signature(step: object) -> Signature[Any]:
    if not isinstance(step, Signature):
        raise ConfigurationError(
            f"a workflow step must be a task signature (task.s() or task.si()), not {step!r}"
        )
    return step


def _steps(other: object) -> list[Signature[Any]]:
    return other.steps if isinstance(other, Chain) else [_signature(other)]
