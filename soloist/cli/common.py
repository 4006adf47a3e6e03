"""What every `soloist` command shares: loading the app, logging set-up."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from .. import logs
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
    except Exception as exc:  # whatever the module raised: say where
        raise click.BadParameter(
            f"cannot import {module_name!r}: {_culprit(exc)}", param_hint="-A"
        ) from None
    if not hasattr(module, attr or "app"):
        raise click.BadParameter(
            f"module {module_name!r} has no attribute {attr or 'app'!r}", param_hint="-A"
        )
    app = as_app(getattr(module, attr or "app"))
    if app is None:
        raise click.BadParameter(
            f"{module_name}:{attr or 'app'} is not a soloist App", param_hint="-A"
        )
    return app


def _culprit(exc: BaseException) -> str:
    """An import error with the file and line that raised it (outside the import system)."""
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{exc.filename}, line {exc.lineno}: "
    else:
        tb = traceback.extract_tb(exc.__traceback__)
        frames = [f for f in tb if "importlib" not in f.filename]
        if frames and not frames[-1].filename.endswith("cli/common.py"):
            where = f"{frames[-1].filename}, line {frames[-1].lineno}: "
    return f"{where}{type(exc).__name__}: {exc}"


APP_HELP = "e.g. myproj.tasks:app (default: the SOLOIST_APP environment variable)."


def _app_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """The command's -A, else the one given before the command (`soloist -A … worker`),
    else SOLOIST_APP (click reads it into either)."""
    value = value or ctx.find_root().params.get("app_path")
    if not value:
        raise click.UsageError("no app: give -A MODULE:APP or set SOLOIST_APP", ctx)
    return value


def app_option(fn: F) -> F:
    return click.option(
        "-A",
        "--app",
        "app_path",
        default=None,
        metavar="MODULE:APP",
        envvar="SOLOIST_APP",
        callback=_app_path,
        help="The app, " + APP_HELP,
    )(fn)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Log to stderr at `level`, as text lines or (`fmt="json"`) JSON objects."""
    logs.setup(level, fmt)


def queue_names(app: App, extra: Iterable[str] = ()) -> list[str]:
    """The app's default queue, its tasks' queues, and `extra`, sorted."""
    names = {app.default_queue, *(t.options.queue for t in app.tasks.values()), *extra}
    return sorted(names)
