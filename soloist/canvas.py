"""Workflows, the producer's side: signatures, and the chains, groups and chords built of them.

A `Signature` is one task call put in a box to be sent later: `add.s(2)` (partial: the
result of the step before is prepended to its arguments) or `add.si(2, 3)` (immutable).
Workflows are sent as ordinary messages whose options carry what happens next, under the
`wf` key (their form in `soloist.workflow_wire`, the worker's side in `soloist.workflow`),
so nothing polls:

* `chain(a, b, c)` / `a | b | c`: `a` is sent with `b` and `c` in its options; the worker
  that settles `a` sends `b` with `a`'s result, and so on.
* `group(sigs)`: every member sent in one batch.
* `chord(group, callback)` / `group | callback`: each member carries the chord's id, its
  index, the size and the callback; the result store counts the members (a set, so a
  redelivered member counts once) and the member that completes the set sends the callback.

They nest: members can be chains (the chord's option rides on the last call a member
makes), and a chord in a chain is one step that carries the steps after it in its
callback's options, so a chain is always a list of calls that may end with a chord.

Every call's id is chosen here, before anything is sent (`freeze`), so the handle of a
workflow knows all of its task ids, and a step a worker sends twice (it died in between)
keeps its id: the copy finds the first one's result and does not run again.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Union, overload

from .errors import ConfigurationError
from .message import new_id
from .result import Result
from .workflow_result import ChainResult, ChordResult, GroupResult
from .workflow_wire import ids_of, items_for, last_call

if TYPE_CHECKING:
    from .app import App

R = TypeVar("R")
S = TypeVar("S")

class Signature(Generic[R]):
    """One task call, ready to be sent or to be a step of a workflow.

    `R` is the task's return type. Type checkers check its arguments only for `si()` (see
    `Task.s`); at run time they are checked before sending wherever they are known."""

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
            self.id = new_id()
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
        _check(sig, tuple(args))
        ((message, queue, delay, priority),) = items_for(sig.to_dict(), tuple(args))
        self.app.send(message, queue, delay=delay, priority=priority)
        return self.app.result(message.id)

    def delay(self, *args: Any, **kwargs: Any) -> Result[R]:
        """Send the call with these arguments prepended (see `apply_async`)."""
        return self.apply_async(args, kwargs)

    @overload
    def __or__(self, other: Signature[S] | Chain[S] | Chord[S]) -> Chain[S]: ...
    @overload
    def __or__(self, other: Group[S]) -> Chain[list[S]]: ...
    def __or__(self, other: Step) -> Chain[Any]:
        return Chain([self, other])


#: What a chain is made of. A group followed by a step is a chord; a chain in a chain is
#: its steps.
Step = Union[Signature[Any], "Chain[Any]", "Group[Any]", "Chord[Any]"]
#: What a group (or a chord's header) is made of.
Member = Union[Signature[Any], "Chain[Any]"]


class Chain(Generic[R]):
    """Calls run one after the other, each getting the result of the one before; `R` is
    the last one's return type. A step can be a group followed by a step (a chord: each
    member gets the result before, the step after gets the list of theirs)."""

    def __init__(self, steps: Iterable[Step]) -> None:
        self.steps: list[Signature[Any] | Group[Any] | Chord[Any]] = []
        for step in steps:
            if isinstance(step, Chain):
                self.steps += step.steps
            elif isinstance(step, (Signature, Group, Chord)):
                self.steps.append(step)
            else:
                raise ConfigurationError(
                    "a chain step must be a signature (task.s() or task.si()), a chain, "
                    f"a group or a chord, not {step!r}"
                )
        if not self.steps:
            raise ConfigurationError("a chain needs at least one step")

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.steps))

    @overload
    def __or__(self, other: Signature[S] | Chain[S] | Chord[S]) -> Chain[S]: ...
    @overload
    def __or__(self, other: Group[S]) -> Chain[list[S]]: ...
    def __or__(self, other: Step) -> Chain[Any]:
        return Chain([self, other])

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
        steps = _fold(self.steps)
        if link is not None:
            _tail(steps[-1]).link(link)
        if link_error is not None:
            for step in steps:
                _tail(step).link_error(link_error)
        for i, step in enumerate(steps):
            _check(step, tuple(args) if i == 0 else None)
        wire = _wire(steps)
        app = _app(steps[0])
        app.send_many(items_for(wire[0], tuple(args), wire[1:]))
        return ChainResult(app, [task_id for step in wire for task_id in ids_of(step)])

    def delay(self, *args: Any) -> ChainResult[R]:
        return self.apply_async(args)


class Group(Generic[R]):
    """Calls (or chains) run in parallel, on any workers; `R` is their return type."""

    def __init__(self, members: Iterable[Signature[R] | Chain[R]]) -> None:
        self.members: list[Member] = []
        for member in members:
            if not isinstance(member, (Signature, Chain)):
                raise ConfigurationError(
                    f"a group member must be a signature or a chain, not {member!r}"
                )
            self.members.append(member)

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.members))})"

    def __or__(self, callback: Signature[S]) -> Chord[S]:
        return Chord(self, callback)

    def apply_async(self, args: tuple[Any, ...] | list[Any] = ()) -> GroupResult[R]:
        """Send every member in one batch (with `args` prepended to each)."""
        if not self.members:
            return GroupResult(None, [])
        app = _app(self.members[0])
        _check(self, tuple(args))
        members = [_member(m) for m in self.members]
        app.send_many([item for m in members for item in items_for(m, tuple(args))])
        return GroupResult(app, [_handle(app, m) for m in members])

    def delay(self, *args: Any) -> GroupResult[R]:
        return self.apply_async(args)


class Chord(Generic[R]):
    """A group, then a callback that gets the list of the members' results (in order),
    sent once, by the worker that settles the last member. `R` is the callback's type.

    If a member fails (or is revoked), the callback does not run: it is recorded as failed
    with a `ChordError` naming the first failed member, and its `link_error` runs."""

    def __init__(self, header: Group[Any] | Iterable[Member], body: Signature[R]) -> None:
        self.header = header if isinstance(header, Group) else Group(header)
        if not isinstance(body, Signature):
            raise ConfigurationError(f"a chord's callback must be a signature, not {body!r}")
        self.body = body

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    def __or__(self, other: Signature[S] | Chain[S] | Chord[S]) -> Chain[S]:
        return Chain([self, other])

    def apply_async(self, args: tuple[Any, ...] | list[Any] = ()) -> ChordResult[R]:
        """Send the members (with `args` prepended to each) in one batch."""
        app = self.body.app
        _check(self, tuple(args))
        step = _wire([Chord(self.header, self.body.clone())])[0]
        app.send_many(items_for(step, tuple(args)))
        members = GroupResult(app, [_handle(app, m) for m in step["group"]])
        return ChordResult(app, step["cb"]["id"], members)

    def delay(self, *args: Any) -> ChordResult[R]:
        return self.apply_async(args)


def _fold(
    steps: Sequence[Signature[Any] | Group[Any] | Chord[Any]],
) -> list[Signature[Any] | Chord[Any]]:
    """A chain's steps as signatures and chords (a group and the step after it), copied so
    that sending does not change the caller's objects."""
    out: list[Signature[Any] | Chord[Any] | Group[Any]] = []
    for step in steps:
        last = out[-1] if out else None
        if isinstance(step, Signature) and isinstance(last, Group):
            out[-1] = Chord(last, step.clone())
        elif isinstance(step, Signature):
            out.append(step.clone())
        elif isinstance(step, Chord):
            out.append(Chord(step.header, step.body.clone()))
        else:
            out.append(step)
    folded = [step for step in out if not isinstance(step, Group)]
    if len(folded) != len(out):
        raise ConfigurationError("a group in a chain must be followed by a step (a chord)")
    return folded


def _wire(steps: Sequence[Signature[Any] | Chord[Any]]) -> list[dict[str, Any]]:
    """A folded chain as the dicts messages carry: a chord takes the steps after it into
    its callback's options, so it is always the last."""
    out: list[dict[str, Any]] = []
    for step in reversed(steps):
        if isinstance(step, Signature):
            out.insert(0, step.to_dict())
        else:
            out = [_chord_step(step, out)]
    return out


def _chord_step(chord: Chord[Any], rest: list[dict[str, Any]]) -> dict[str, Any]:
    """A chord as one wire step: its members, each carrying the chord's id, its index, the
    size and the callback (which carries `rest`) on the last call it makes."""
    callback = chord.body.to_dict()
    if rest:
        callback.setdefault("wf", {})["chain"] = rest
    size = len(chord.header.members)
    members = [_member(m) for m in chord.header.members]
    for i, member in enumerate(members):
        option = {"id": callback["id"], "i": i, "n": size, "cb": callback}
        last_call(member).setdefault("wf", {})["chord"] = option
    return {"group": members, "cb": callback}


def _member(member: Member) -> dict[str, Any]:
    """A group member as one self-contained wire step (a chain's rest in its options)."""
    if isinstance(member, Signature):
        return member.clone().to_dict()
    first, *rest = _wire(_fold(member.steps))
    if rest:
        first.setdefault("wf", {})["chain"] = rest
    return first


def _handle(app: App, step: dict[str, Any]) -> Result[Any]:
    ids = ids_of(step)
    return app.result(ids[0]) if len(ids) == 1 else ChainResult(app, ids)


def _tail(step: Signature[Any] | Chord[Any]) -> Signature[Any]:
    return step if isinstance(step, Signature) else step.body


def _app(step: Step) -> App:
    if isinstance(step, Signature):
        return step.app
    if isinstance(step, Chord):
        return step.body.app
    if isinstance(step, Chain):
        return _app(step.steps[0])
    if not step.members:
        raise ConfigurationError("an empty group cannot start a chain")
    return _app(step.members[0])


def _check(step: Step, args: tuple[Any, ...] | None) -> None:
    """Raise TypeError before anything is sent for a call that cannot fit its task: every
    immutable call, and the others that get `args` (None: known only at run time)."""
    if isinstance(step, Signature):
        if step.immutable:
            step.check()
        elif args is not None:
            step.check((*args, *step.args))
    elif isinstance(step, Chain):
        for i, s in enumerate(step.steps):
            _check(s, args if i == 0 else None)
    elif isinstance(step, Group):
        for member in step.members:
            _check(member, args)
    else:
        _check(step.header, args)
        _check(step.body, None)


# Typed for up to five steps; `|` keeps the last step's type for any length.
@overload
def chain(a: Signature[R] | Chain[R] | Chord[R], /) -> Chain[R]: ...
@overload
def chain(a: Step, b: Signature[R] | Chain[R] | Chord[R], /) -> Chain[R]: ...
@overload
def chain(a: Step, b: Step, c: Signature[R] | Chain[R] | Chord[R], /) -> Chain[R]: ...
@overload
def chain(a: Step, b: Step, c: Step, d: Signature[R] | Chain[R] | Chord[R], /) -> Chain[R]: ...
@overload
def chain(
    a: Step, b: Step, c: Step, d: Step, e: Signature[R] | Chain[R] | Chord[R], /
) -> Chain[R]: ...
@overload
def chain(*steps: Step) -> Chain[Any]: ...
def chain(*steps: Step) -> Chain[Any]:
    """Run the steps one after another, each getting the result of the one before."""
    return Chain(steps)


@overload
def group(members: Iterable[Signature[R] | Chain[R]], /) -> Group[R]: ...
@overload
def group(*members: Signature[R] | Chain[R]) -> Group[R]: ...
def group(*members: Any) -> Group[Any]:
    """Run the members in parallel: `group([a, b])` or `group(a, b)`."""
    if len(members) == 1 and not isinstance(members[0], (Signature, Chain)):
        return Group(members[0])
    return Group(members)


def chord(header: Group[Any] | Iterable[Member], body: Signature[R]) -> Chord[R]:
    """Run the header's members in parallel, then `body` with the list of their results."""
    return Chord(header, body)
