"""Tasks: a function registered with an app, called locally or sent to a queue."""

from __future__ import annotations

import contextvars
import datetime as dt
import inspect
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, NoReturn, ParamSpec, TypeVar

from .canvas import Signature
from .errors import ConfigurationError, Retry
from .limits import KeyFunction, Limits
from .message import Message
from .result import Result
from .workflow_result import GroupResult

if TYPE_CHECKING:
    from .app import App

P = ParamSpec("P")
R = TypeVar("R")

#: The built-in task that runs one chunk of `Task.chunks` (every app registers it).
CHUNK_TASK = "soloist.chunk"


def register_builtins(app: App) -> None:
    """Register the built-in tasks on `app` (a worker imports the same app): the one
    that runs a chunk of `Task.chunks`."""

    def chunk(task: str, calls: list[list[Any]]) -> list[Any]:
        """Run a chunk of calls of `task`, one after the other, in this worker."""
        target = app.tasks[task]
        return [target.run(tuple(args), {}) for args in calls]

    app.task(name=CHUNK_TASK)(chunk)


@dataclass(frozen=True)
class TaskOptions:
    """How a task is sent and run. Every field can be given to `@app.task(...)`."""

    name: str
    queue: str = "default"
    priority: int = 0
    #: Retries after the first run; None retries forever.
    max_retries: int | None = 3
    #: Back-off of the n-th retry: min(retry_backoff * 2**n, retry_backoff_max) seconds,
    #: drawn uniformly from [0, that] when retry_jitter is on ("full jitter").
    retry_backoff: float = 1.0
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    #: Exceptions that make the task retry instead of fail.
    autoretry_for: tuple[type[BaseException], ...] = ()
    #: Hard limit: the run is abandoned, recorded as failed, and the worker process replaced.
    time_limit: float | None = None
    #: Soft limit: `SoftTimeLimitExceeded` is raised inside the task.
    soft_time_limit: float | None = None
    ignore_result: bool = False
    #: Record STARTED when a worker starts it (one more result-store write per run).
    track_started: bool = False
    #: Pass the task itself as the first argument (for `self.retry()` and `self.request`).
    bind: bool = False
    #: Cluster-wide limits (see soloist.limits): at most N starts per second, minute or
    #: hour ("100/m"); at most N runs at once, per task or per `concurrency_key(*args,
    #: **kwargs)`; a send while an earlier one is queued or running within `unique_for`
    #: seconds (per `unique_key(*args, **kwargs)`) returns the earlier one's handle.
    rate_limit: str | None = None
    max_concurrency: int | None = None
    concurrency_key: KeyFunction | None = None
    unique_for: float | None = None
    unique_key: KeyFunction | None = None
    #: CPUs the task uses (its own process pool's size): under a worker's `--cpus` budget
    #: it starts only once that many of the host's CPUs are free (see soloist.worker.cpus).
    cpus: int | None = None

    def backoff(self, retries: int) -> float:
        """Seconds to wait before retry number `retries` + 1."""
        ceiling = min(self.retry_backoff * (2**retries), self.retry_backoff_max)
        return random.uniform(0, ceiling) if self.retry_jitter else ceiling


class Request(NamedTuple):
    """What a running task can learn about its own call (`self.request` in a bound task).

    A named tuple rather than a frozen dataclass: one is made for every task run, and it
    costs a fifth as much."""

    id: str
    task: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    queue: str
    retries: int = 0
    delivery_count: int = 1
    eager: bool = False
    #: The CPUs this run may use, to size a process pool by: the task's `cpus` (what a
    #: worker's CPU budget granted, at most the budget), or None for a task that declared
    #: none (then `ProcessPoolExecutor(self.request.cpus)` takes every CPU, as usual).
    cpus: int | None = None


_current_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "soloist_request", default=None
)


class Task(Generic[P, R]):
    """A registered task. Calling it runs the function here; `delay` sends it to a worker."""

    def __init__(self, app: App, fn: Callable[..., Any], options: TaskOptions) -> None:
        self.app = app
        self.fn = fn
        self.options = options
        self.name = options.name
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", options.name)
        self.__wrapped__ = fn
        #: The function's signature and its plain arity (see `misfit`), read on first use.
        self._shape: tuple[inspect.Signature, int] | None = None
        #: None unless the task has a limit: all a worker checks for a task without one.
        self.limits = Limits.of(
            options.name,
            options.rate_limit,
            options.max_concurrency,
            options.concurrency_key,
            options.unique_for,
            options.unique_key,
        )

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def misfit(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
        """Why a call with these arguments would not fit the function, or None.

        Producers check before they send, workers before they run. The signature is read
        once per task; the common call, exactly the N positional arguments of a function
        that takes N without defaults, costs one length comparison."""
        if self._shape is None:
            signature = inspect.signature(self.fn)
            arity = _plain_arity(signature)
            self._shape = signature, arity - self.options.bind if arity >= 0 else -1
        signature, arity = self._shape
        if kwargs or len(args) != arity:
            try:
                signature.bind(*((self, *args) if self.options.bind else args), **kwargs)
            except TypeError as exc:
                params = ", ".join(signature.parameters)
                return f"arguments do not fit {self.name}({params}): {exc}"
        return None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = self.run(args, kwargs)
        return result

    def run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call the function with a message's arguments (what a pool does)."""
        return self.fn(self, *args, **kwargs) if self.options.bind else self.fn(*args, **kwargs)

    @property
    def request(self) -> Request:
        """The call being run right now, inside this task."""
        req = current_request()
        if req is None:
            return Request("", self.name, (), {}, self.options.queue)
        return req

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Result[R]:
        """Send a call with these arguments to the task's queue."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: dt.datetime | float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        task_id: str | None = None,
        ignore_result: bool | None = None,
        link: Signature[Any] | None = None,
        link_error: Signature[Any] | None = None,
        expires: float | dt.datetime | None = None,
    ) -> Result[R]:
        """Send a call with options: run no sooner than `countdown` seconds from now or at
        `eta` (a datetime, naive meaning local time, or a unix time), on `queue`; not at
        all if no worker starts it within `expires` (seconds from now, or a datetime):
        then it is recorded as REVOKED, its reason "expired".

        `link` is sent when the call succeeds, with its result prepended to the link's
        arguments; `link_error` when it fails for good, with its task id and error (see
        `Signature.link` and `Signature.link_error`)."""
        misfit = self.misfit(args, kwargs or {})
        if misfit is not None:
            raise TypeError(misfit)
        delay = _delay(countdown, eta)
        ignore = self.options.ignore_result if ignore_result is None else ignore_result
        options: dict[str, Any] = {"ignore_result": True} if ignore else {}
        if expires is not None:
            options["expires"] = _expiry(expires)
        message = Message(self.name, tuple(args), dict(kwargs or {}), options=options)
        if task_id is not None:
            message.id = task_id
        if link is not None or link_error is not None:
            flow = self.s().set(task_id=message.id)
            for callback in [link] if link is not None else []:
                flow.link(callback)
            for errback in [link_error] if link_error is not None else []:
                flow.link_error(errback)
            message.options["wf"] = flow.to_dict()["wf"]
        queue = queue or self.options.queue
        priority = self.options.priority if priority is None else priority
        if self.limits is not None and self.limits.unique_for is not None:
            return self._send_unique(message, queue, delay, priority, self.limits.unique_for)
        send = self.app.send if task_id is None else self.app.send_once
        send(message, queue, delay=delay, priority=priority)
        return Result(self.app, message.id, ignored=ignore)

    def _send_unique(
        self, message: Message, queue: str, delay: float, priority: int, unique_for: float
    ) -> Result[R]:
        """Send unless an earlier call of the same key is queued or running: then its handle."""
        assert self.limits is not None
        ignored = bool(message.options.get("ignore_result"))
        key = self.limits.unique(message.args, message.kwargs)
        first = self.app.results.claim(key, message.id, unique_for)
        if first is not None:
            return Result(self.app, first, ignored=ignored)
        try:
            self.app.send(message, queue, delay=delay, priority=priority)
        except BaseException:
            self.app.results.swap(key, message.id, None, unique_for)  # nothing was sent
            raise
        return Result(self.app, message.id, ignored=ignored)

    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """A signature of a call, for workflows: in a chain or as a link, the result of the
        step before is prepended to `args`. The arguments are not type-checked (a partial
        call cannot be, in Python's type system); the return type is."""
        return Signature(
            self.app,
            self.name,
            args,
            kwargs,
            queue=self.options.queue,
            priority=self.options.priority,
        )

    def si(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """An immutable signature: the call gets exactly these (type-checked) arguments."""
        sig: Signature[R] = self.s(*args, **kwargs)
        sig.immutable = True
        return sig

    def map(self, items: Iterable[Any]) -> GroupResult[R]:
        """Send one call per item, the item its only argument, batched into as few broker
        round trips as the broker allows; the handle's `get()` collects the results."""
        return self.starmap((item,) for item in items)

    def starmap(self, calls: Iterable[Sequence[Any]]) -> GroupResult[R]:
        """Like `map`, each item of `calls` a sequence of positional arguments (sent one
        by one for a task with `unique_for`, each checked)."""
        if self.limits is not None and self.limits.unique_for is not None:
            return GroupResult(self.app, [self.apply_async(tuple(args)) for args in calls])
        ignore = self.options.ignore_result
        opts = {"ignore_result": True} if ignore else {}
        messages = [Message(self.name, tuple(args), {}, options=opts) for args in calls]
        for message in messages:  # before anything is sent
            misfit = self.misfit(message.args, {})
            if misfit is not None:
                raise TypeError(misfit)
        queue, priority = self.options.queue, self.options.priority
        self.app.send_many([(m, queue, 0.0, priority) for m in messages])
        return GroupResult(self.app, [Result(self.app, m.id, ignored=ignore) for m in messages])

    def chunks(self, calls: Iterable[Sequence[Any]], n: int) -> GroupResult[list[R]]:
        """Split `calls` (sequences of positional arguments) into tasks of `n` calls each,
        run one after the other by one worker: fewer, larger messages for many tiny calls.
        The handle's `get()` returns one list of results per chunk."""
        if n < 1:
            raise ConfigurationError(f"chunks of {n} calls: give n >= 1")
        if isinstance(self, AsyncTask):
            raise ConfigurationError(f"{self.name} is async: chunks run plain tasks only")
        items = [list(args) for args in calls]
        chunk = self.app.tasks[CHUNK_TASK]
        queue, priority = self.options.queue, self.options.priority
        messages = [
            Message(chunk.name, (self.name, items[i : i + n])) for i in range(0, len(items), n)
        ]
        self.app.send_many([(m, queue, 0.0, priority) for m in messages])
        return GroupResult(self.app, [Result[list[R]](self.app, m.id) for m in messages])

    def retry(
        self,
        countdown: float | None = None,
        exc: BaseException | None = None,
        max_retries: int | None = None,
    ) -> NoReturn:
        """Run this call again later (from inside a bound task): raises `Retry`."""
        raise Retry(countdown=countdown, exc=exc, max_retries=max_retries)


class AsyncTask(Task[P, R]):
    """A task defined with `async def`; workers await it on their own event loop."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:  # type: ignore[override]
        coro: Coroutine[Any, Any, R] = super().__call__(*args, **kwargs)  # type: ignore[assignment]
        return coro


def _delay(countdown: float | None, eta: dt.datetime | float | None) -> float:
    if countdown is not None and eta is not None:
        raise ConfigurationError("give countdown or eta, not both")
    if countdown is not None:
        return max(float(countdown), 0.0)
    if eta is None:
        return 0.0
    when = eta.timestamp() if isinstance(eta, dt.datetime) else float(eta)
    return max(when - time.time(), 0.0)


class RemoteTask(Task[..., Any]):
    """A task known here only by name (`app.send_task`): its code lives in the workers, so
    its arguments are checked there."""

    def __init__(self, app: App, name: str) -> None:
        super().__init__(app, _remote, TaskOptions(name=name, queue=app.default_queue))

    def misfit(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
        return None


def _remote(*args: Any, **kwargs: Any) -> Any:
    raise ConfigurationError("a task sent by name runs on a worker, not here")


def _plain_arity(signature: inspect.Signature) -> int:
    """N when the function takes exactly N positional arguments without defaults (then
    N positional arguments always fit), else -1: the arguments are bound to be sure."""
    kinds = {p.kind for p in signature.parameters.values()}
    plain = kinds <= {inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD}
    defaults = any(p.default is not p.empty for p in signature.parameters.values())
    return len(signature.parameters) if plain and not defaults else -1


def _expiry(expires: float | dt.datetime) -> float:
    """The unix time a call expires at, from seconds from now or a datetime."""
    if isinstance(expires, dt.datetime):
        return expires.timestamp()
    return time.time() + float(expires)


def current_request() -> Request | None:
    """The call running in this thread (or task) right now, if any."""
    return _current_request.get()


#: Make `request` the current call (the ContextVar's own C method: a wrapper around it
#: would add a Python call to every task run), and give back the token that resets it.
set_request: Callable[[Request | None], contextvars.Token[Request | None]] = (
    _current_request.set
)
#: Put back the call current before `set_request` returned `token`.
reset_request: Callable[[contextvars.Token[Request | None]], None] = _current_request.reset
