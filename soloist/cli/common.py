"""What every `soloist` command shares: loading the app, logging set-up."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from ..adapters import as_app
from ..app import App

F = TypeVar("F", bound=Callable[..., Any])


def load_app(path: str) -> App:
    """`pkg.module:app` (or `pkg.module`, which must define `app`) -> the App object."""
    module_name, _, attr = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would, so local modules are found
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}", param_hint="-A") from None
    app = as_app(getattr(module, attr or "app", None))
    if app is None:
        raise click.BadParameter(
            f"{module_name}:{attr or 'app'} is not a soloist App", param_hint="-A"
        )
    return app


def app_option(fn: F) -> F:
    return click.option(
        "-A",
        "--app",
        "app_path",
        required=True,
        metavar="MODULE:APP",
        envvar="SOLOIST_APP",
        help="The app, e.g. myproj.tasks:app.",
    )(fn)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Log to stderr at `level`, as text lines or (`fmt="json"`) JSON objects."""
    from ..logs import setup

    setup(level, fmt)


def queue_names(app: App, extra: Iterable[str] = ()) -> list[str]:
    """The app's default queue, its tasks' queues, and `extra`, sorted."""
    names = {app.default_queue, *(t.options.queue for t in app.tasks.values()), *extra}
    return sorted(names)
