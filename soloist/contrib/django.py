"""Django integration (extra `soloist[django]`): the app from settings, tasks found in
installed apps, enqueue on commit, and workers that close stale database connections.

    # settings.py
    SOLOIST = {"broker": "redis://localhost:6379/0"}    # App's keyword arguments

    # myapp/tasks.py
    from soloist.contrib.django import app

    @app.task
    def send_receipt(order_id: int) -> None: ...

    # a view
    with transaction.atomic():
        order = Order.objects.create(...)
        send_receipt.delay_on_commit(order.id)   # sent only if the transaction commits

    $ DJANGO_SETTINGS_MODULE=mysite.settings soloist worker -A soloist.contrib.django:app

`app` is built on first use from the `SOLOIST` setting (the keyword arguments of `App`)
and the `SOLOIST_BROKER_URL` / `SOLOIST_RESULT_URL` settings, which fill `broker` and
`results` when `SOLOIST` does not name them (the environment variables of the same names
come after both, as for any App). Once Django's app registry is ready (a worker sets
Django up for that), the `tasks` module of every installed app is imported, so the
worker knows every task whatever imported `app` first.

Workers close the database connections that are broken or older than `CONN_MAX_AGE`
before each task and after it, where the task runs (what Django does around each
request), so a database restart or a connection the server dropped fails no task.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar, overload

import django
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, transaction

from ..app import App, TaskSettings
from ..brokers.base import Delivery
from ..errors import ConfigurationError
from ..execution import Outcome, TaskRunner
from ..task import AsyncTask, Task

if TYPE_CHECKING:
    from typing_extensions import Unpack

P = ParamSpec("P")
R = TypeVar("R")

#: The module of each installed app that is imported to register its tasks.
TASKS_MODULE = "tasks"


class DjangoTaskRunner(TaskRunner):
    """Runs each task between two `close_old_connections()`, as Django serves a request:
    the connections of the thread (or child process) that runs it that are broken, or
    older than CONN_MAX_AGE, are closed before the task and after it. In the runner, so
    it happens where the task runs, in every pool (Django's connections are per thread)."""

    def run(self, delivery: Delivery) -> Outcome:
        close_old_connections()
        try:
            return super().run(delivery)
        finally:
            close_old_connections()


class DjangoTask(Task[P, R]):
    """A task that can be sent once the current database transaction commits."""

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """`delay()` once the transaction commits; nothing is sent if it rolls back.
        Outside a transaction (autocommit) it is sent at once. The arguments are checked
        now, so a bad call fails in the request, not after the commit."""
        self.apply_async_on_commit(args, kwargs)

    def apply_async_on_commit(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        using: str | None = None,
        **options: Any,
    ) -> None:
        """`apply_async(args, kwargs, **options)` once the transaction on the database
        `using` (Django's default one if None) commits."""
        misfit = self.misfit(args, kwargs or {})
        if misfit is not None:
            raise TypeError(misfit)
        transaction.on_commit(lambda: self.apply_async(args, kwargs, **options), using=using)


class DjangoAsyncTask(AsyncTask[P, R], DjangoTask[P, R]):
    """An `async def` task with `delay_on_commit`."""


class _Decorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> DjangoAsyncTask[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> DjangoTask[P, R]: ...


class _BoundDecorator(Protocol):
    @overload
    def __call__(
        self, fn: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]
    ) -> DjangoAsyncTask[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[Any, P], R]) -> DjangoTask[P, R]: ...


class DjangoApp(App):
    """An App whose tasks have `delay_on_commit` and whose workers close stale
    database connections around each task (`DjangoTaskRunner`)."""

    task_class = DjangoTask
    async_task_class = DjangoAsyncTask

    runner_factory = DjangoTaskRunner

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> DjangoAsyncTask[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> DjangoTask[P, R]: ...
    @overload
    def task(self, *, bind: Literal[True], **options: Unpack[TaskSettings]) -> _BoundDecorator: ...
    @overload
    def task(
        self, *, bind: Literal[False] = ..., **options: Unpack[TaskSettings]
    ) -> _Decorator: ...
    def task(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        return super().task(fn, **options) if fn is not None else super().task(**options)


def from_settings() -> DjangoApp:
    """A new app configured from Django's settings (see the module's docstring)."""
    options: dict[str, Any] = dict(getattr(settings, "SOLOIST", {}) or {})
    for key, setting in (("broker", "SOLOIST_BROKER_URL"), ("results", "SOLOIST_RESULT_URL")):
        if options.get(key) is None and getattr(settings, setting, None):
            options[key] = getattr(settings, setting)
    try:
        return DjangoApp(**options)
    except TypeError as exc:
        raise ConfigurationError(f"bad SOLOIST setting: {exc}") from None


def autodiscover(module: str = TASKS_MODULE) -> list[str]:
    """Import `<app>.<module>` for every installed Django app that has one (as Celery's
    autodiscover_tasks does); returns the modules imported."""
    found = []
    for config in apps.get_app_configs():
        name = f"{config.name}.{module}"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
            found.append(name)
    return found


if TYPE_CHECKING:
    app: DjangoApp  # built on first access, by the module's __getattr__

_app: DjangoApp | None = None
_lock = threading.RLock()


def get_app() -> DjangoApp:
    """The process's app (`soloist.contrib.django.app`), built on first use."""
    global _app
    with _lock:
        if _app is not None:
            return _app
        # Set before Django is set up and tasks are imported: they import `app` from here.
        try:
            _app = from_settings()
            if not apps.ready and not apps.loading:
                django.setup()  # a worker: nothing set Django up yet
        except ImproperlyConfigured as exc:
            _app = None
            raise ConfigurationError(f"Django is not configured: {exc}") from None
        if apps.ready:
            autodiscover()
        return _app


def __getattr__(name: str) -> Any:
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
