"""The App: configuration, the task registry, and the broker and result store it talks to."""

from __future__ import annotations

import datetime as dt
import inspect
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Concatenate,
    Literal,
    ParamSpec,
    Protocol,
    TypedDict,
    TypeVar,
    overload,
)

from . import signing
from .brokers import Broker
from .brokers import from_url as broker_from_url
from .brokers.base import DEFAULT_MAX_DELIVERIES, DeadLetter
from .errors import ConfigurationError, DecodeError
from .hooks import Hooks
from .message import DEFAULT_MAX_DEPTH, Message
from .result import Result
from .results import SCHEMES as RESULT_SCHEMES
from .results import ResultStore
from .results import from_url as results_from_url
from .results.base import DEFAULT_TTL, FAILURE, PENDING
from .schedules import Schedule, interval
from .serializers import Codec
from .task import AsyncTask, RemoteTask, Task, TaskOptions, register_builtins
from .urls import redact

if TYPE_CHECKING:
    from typing_extensions import Unpack

P = ParamSpec("P")
R = TypeVar("R")

#: The embedded default: a first run needs no server.
DEFAULT_URL = "sqlite:///soloist.db"
#: Messages over this many bytes are refused by producers and dead-lettered by workers.
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
#: Dead letters read per queue by one `requeue_dead` (or `soloist dead-letters`) call.
DEAD_SCAN = 100_000


class TaskSettings(TypedDict, total=False):
    """The options of `@app.task(...)`; see `TaskOptions` for what each does."""

    name: str | None
    queue: str | None
    priority: int
    max_retries: int | None
    retry_backoff: float
    retry_backoff_max: float
    retry_jitter: bool
    autoretry_for: tuple[type[BaseException], ...]
    time_limit: float | None
    soft_time_limit: float | None
    ignore_result: bool
    track_started: bool
    rate_limit: str | None
    max_concurrency: int | None
    concurrency_key: Callable[..., str] | None
    unique_for: float | None
    unique_key: Callable[..., str] | None
    cpus: int | None


class _Decorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> AsyncTask[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Task[P, R]: ...


class _BoundDecorator(Protocol):
    @overload
    def __call__(
        self, fn: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]
    ) -> AsyncTask[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[Any, P], R]) -> Task[P, R]: ...


class App:
    """A Soloist application.

    `broker` and `results` are URLs (or ready instances); they default to the
    `SOLOIST_BROKER_URL` and `SOLOIST_RESULT_URL` environment variables. The broker's
    default is `sqlite:///soloist.db`; results default to the broker's URL when that server
    can keep them (memory, SQLite, Redis). A RabbitMQ broker keeps none: without a result
    URL, sending works and `get()` raises `ConfigurationError`. In eager mode
    (`eager=True`) the broker is the eager broker, which runs each task as it is sent, and
    results default to `memory://` (see soloist.eager). Connections open on first use, so
    importing the module that defines an app is free and safe before a fork.
    """

    #: Makes the task runner a worker runs this app's deliveries with, called with the
    #: runner's arguments; None: Soloist's own. An adapter's app (soloist.celery)
    #: sets its own, since its messages and tasks are another framework's.
    runner_factory: Callable[..., Any] | None = None

    #: The classes `task` makes plain and `async def` tasks of; an integration's app may
    #: use subclasses with more methods (soloist.contrib.django: `delay_on_commit`).
    task_class: ClassVar[type[Task[Any, Any]]] = Task
    async_task_class: ClassVar[type[AsyncTask[Any, Any]]] = AsyncTask

    #: Builds the eager broker; soloist.eager sets it (it runs tasks, a layer above this).
    eager_broker: ClassVar[Callable[[App], Broker]]

    def __init__(
        self,
        broker: str | Broker | None = None,
        results: str | ResultStore | None = None,
        *,
        default_queue: str = "default",
        serializer: str = "json",
        accept_pickle: bool = False,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_result_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_depth: int = DEFAULT_MAX_DEPTH,
        signing_key: str | bytes | Sequence[str | bytes] | None = None,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        result_ttl: float = DEFAULT_TTL,
        eager: bool = False,
    ) -> None:
        self.broker_url: str | None = None
        self.result_url: str | None = None
        self._broker: Broker | None = None
        self._results: ResultStore | None = None
        self._given_broker = self._given_results = False
        self.eager = eager
        self.configure(broker, results)
        self.default_queue = default_queue
        self.codec = Codec(serializer, accept_pickle)
        self.max_message_size = max_message_size
        self.max_result_size = max_result_size
        self.max_depth = max_depth
        key = signing_key if signing_key is not None else os.environ.get("SOLOIST_SIGNING_KEY")
        self.signer = signing.from_setting(key)
        self.max_deliveries = max_deliveries
        self.result_ttl = result_ttl
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: Periodic tasks' schedules, by task name (see `periodic`).
        self.schedules: dict[str, Schedule] = {}
        self.hooks = Hooks()
        register_builtins(self)

    def configure(
        self, broker: str | Broker | None = None, results: str | ResultStore | None = None
    ) -> None:
        """Point the app at a broker and result store (URLs or instances), closing any
        connections already open. None means the environment's URL, else the default."""
        self.close()
        self._given_broker = isinstance(broker, Broker)
        self._given_results = isinstance(results, ResultStore)
        self._broker = broker if isinstance(broker, Broker) else None
        self._results = results if isinstance(results, ResultStore) else None
        if self.eager:
            self._given_broker, self._broker, broker_url = False, None, "eager://"
        elif isinstance(broker, Broker):
            broker_url = broker.url
        else:
            broker_url = broker or os.environ.get("SOLOIST_BROKER_URL", DEFAULT_URL)
        self.broker_url = broker_url
        if isinstance(results, ResultStore):
            self.result_url = results.url
        else:
            # Results go where the broker is, so every process that shares a broker finds
            # them (a default file would be one per working directory). Eager mode runs
            # tasks in the producer: nothing needs to reach another process.
            home = "memory://" if self.eager else broker_url
            beside = home if home.partition(":")[0] in RESULT_SCHEMES else None
            self.result_url = results or os.environ.get("SOLOIST_RESULT_URL") or beside

    @property
    def origin(self) -> object:
        """What the user's module defines: this app, or the app of another framework an
        adapter wraps (see soloist.adapters); the processes pool imports it by name."""
        return self

    @property
    def broker(self) -> Broker:
        if self._broker is None and self.eager:
            self._broker = App.eager_broker(self)
        elif self._broker is None:
            assert self.broker_url is not None
            self._broker = broker_from_url(self.broker_url, self.max_deliveries)
        return self._broker

    @property
    def results(self) -> ResultStore:
        if self._results is None:
            if self.result_url is None:
                raise ConfigurationError(
                    f"no result store: the broker {redact(self.broker_url or '')} keeps no "
                    "results; set SOLOIST_RESULT_URL (or App(results=...)) to redis://... or "
                    "sqlite:///path"
                )
            self._results = results_from_url(self.result_url)
        return self._results

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTask[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(self, *, bind: Literal[True], **options: Unpack[TaskSettings]) -> _BoundDecorator: ...
    @overload
    def task(
        self, *, bind: Literal[False] = ..., **options: Unpack[TaskSettings]
    ) -> _Decorator: ...
    def task(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Register a function as a task: `@app.task` or `@app.task(queue=…, max_retries=…)`."""

        def register(fn: Callable[..., Any]) -> Task[Any, Any]:
            name = options.pop("name", None) or f"{fn.__module__}.{fn.__qualname__}"
            if options.get("queue") is None:
                options["queue"] = self.default_queue
            try:
                opts = TaskOptions(name=name, **options)
            except TypeError as exc:
                raise ConfigurationError(f"bad option for task {name}: {exc}") from None
            if opts.cpus is not None and (not isinstance(opts.cpus, int) or opts.cpus < 1):
                raise ConfigurationError(f"task {name}: cpus must be a whole number >= 1")
            if name in self.tasks and self.tasks[name].fn is not fn:
                raise ConfigurationError(f"two tasks are named {name!r}")
            cls = self.async_task_class if inspect.iscoroutinefunction(fn) else self.task_class
            task = cls(self, fn, opts)
            self.tasks[name] = task
            return task

        return register(fn) if fn is not None else register

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: float | dt.timedelta | None = None,
        tz: str = "UTC",
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        catch_up: bool = False,
        **options: Unpack[TaskSettings],
    ) -> _Decorator:
        """Register a task run on a schedule by workers started with `--beat`: a cron
        expression read in time zone `tz`, or `every` N seconds (or a timedelta), called
        with `args` and `kwargs`. Task options (`queue=`, `priority=`, …) as `task` takes.
        After a time with no scheduler, the last missed tick runs once; `catch_up=True`
        runs each missed tick instead."""

        def register(fn: Callable[..., Any]) -> Any:
            task = self.task(**options)(fn)
            self.schedules[task.name] = Schedule(
                task.name,
                cron=cron,
                every=None if every is None else interval(every),
                tz=tz,
                args=tuple(args),
                kwargs=dict(kwargs or {}),
                catch_up=catch_up,
            )
            return task

        return register

    def encode(self, message: Message, delay: float = 0.0) -> bytes:
        """The body to publish for `message`: serialized, checked against limits, signed."""
        body = message.encode(self.codec, self.max_message_size, self.max_depth)
        return body if self.signer is None else self.signer.sign(body, delay)

    def send(self, message: Message, queue: str, *, delay: float = 0, priority: int = 0) -> None:
        """Encode and publish one message (in eager mode: run it now)."""
        if "before_publish" in self.hooks.active or "after_publish" in self.hooks.active:
            self._announced([(message, queue, delay, priority)], many=False)
            return
        self.broker.publish(queue, self.encode(message, delay), delay=delay, priority=priority)

    def send_many(self, items: Sequence[tuple[Message, str, float, int]]) -> None:
        """Encode and publish (message, queue, delay, priority) items in as few round trips
        as the broker allows (in eager mode: run them now). Durable once it returns."""
        if "before_publish" in self.hooks.active or "after_publish" in self.hooks.active:
            self._announced(items, many=True)
            return
        self.broker.publish_many(
            [(queue, self.encode(m, delay), delay, priority) for m, queue, delay, priority in items]
        )

    def _announced(self, items: Sequence[tuple[Message, str, float, int]], many: bool) -> None:
        """Publish with the before_publish and after_publish hooks around it."""
        for message, queue, _, _ in items:
            self.hooks.emit("before_publish", app=self, message=message, queue=queue)
        error: BaseException | None = None
        try:
            if many:
                self.broker.publish_many(
                    [(q, self.encode(m, delay), delay, prio) for m, q, delay, prio in items]
                )
            else:
                message, queue, delay, priority = items[0]
                body = self.encode(message, delay)
                self.broker.publish(queue, body, delay=delay, priority=priority)
        except BaseException as exc:
            error = exc
            raise
        finally:
            for message, queue, _, _ in items:
                self.hooks.emit(
                    "after_publish", app=self, message=message, queue=queue, error=error
                )

    def send_once(
        self, message: Message, queue: str, *, delay: float = 0, priority: int = 0
    ) -> bool:
        """Send `message` unless its task id is already queued, running or has a result
        (within the result ttl): False then, and nothing is published. So a producer that
        retries a publish after a timeout, with the same task id, does not enqueue twice.

        The id is reserved first (a PENDING record, atomically, in the result store); if
        the publish raises, the reservation is dropped so that a retry can send it. With no
        result store (RabbitMQ alone) there is nowhere to reserve: it is sent as it is."""
        if self.result_url is None:
            self.send(message, queue, delay=delay, priority=priority)
            return True
        body = self.codec.dumps({"sent": time.time()})
        if not self.results.put_new(message.id, PENDING, body, self.result_ttl):
            return False
        try:
            self.send(message, queue, delay=delay, priority=priority)
        except BaseException:
            self.results.forget_if(message.id, (PENDING, body))
            raise
        return True

    def send_task(
        self,
        name: str,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Result[Any]:
        """Send a call of the task named `name`, whose code this process need not import
        (a web tier that only produces), to its queue: `queue=` or the app's default.
        `options` are those of `Task.apply_async`. A task registered here is checked and
        sent as `apply_async` would."""
        task = self.tasks.get(name) or RemoteTask(self, name)
        return task.apply_async(args, kwargs, **options)

    def result(self, task_id: str) -> Result[Any]:
        """The handle of the task call with this id."""
        return Result(self, task_id)

    def decode(self, body: bytes) -> Message:
        """A message body (a dead letter's, say) back as a task call: its signature checked
        when the app signs. Raises DecodeError."""
        if self.signer is not None:
            body = self.signer.verify(body)
        return Message.decode(body, self.codec, self.max_depth)

    def requeue_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        """Run dead letters of `queue` again (the oldest DEAD_SCAN when `ids` is None), their
        counts reset and their stored failures forgotten; returns how many this call moved.

        A FAILURE is final, so a letter's failure is forgotten before it moves, or the rerun
        could not record its result. Only that failure ever is: each record is read first,
        then the letter is checked to be still dead (so the record was there before any
        operator moved it, and is not a rerun's), and `forget_if` drops the record only if
        it is still exactly that one. Two operators requeueing at once thus never erase a
        rerun's result, and the broker moves each letter once (atomically).
        """
        letters = self._dead(queue, ids)
        failures: dict[str, tuple[str, tuple[str, bytes]]] = {}
        for letter in letters:
            try:
                task_id = self.decode(letter.body).id
            except DecodeError:
                continue  # requeued as it is; the rerun dead-letters it with the reason
            record = self.results.get(task_id)
            if record is not None and record[0] == FAILURE:
                failures[letter.id] = (task_id, record)
        for letter in self._dead(queue, list(failures)):  # still dead after the read
            self.results.forget_if(*failures[letter.id])
        if not letters:
            return 0
        return self.broker.requeue_dead(queue, [letter.id for letter in letters])

    def _dead(self, queue: str, ids: Sequence[str] | None) -> list[DeadLetter]:
        """The dead letters of `queue` with these ids (all when None, up to DEAD_SCAN)."""
        if ids is not None and not ids:
            return []
        wanted = None if ids is None else set(ids)
        letters = self.broker.dead_letters(queue, DEAD_SCAN)
        return [letter for letter in letters if wanted is None or letter.id in wanted]

    def close(self) -> None:
        """Close the connections the app opened from URLs (they reopen on next use).

        Broker and store instances handed to the app are left to their owner."""
        if self._broker is not None and not self._given_broker:
            self._broker.close()
            self._broker = None
        if self._results is not None and not self._given_results:
            self._results.close()
            self._results = None
