"""Worker logs: one readable line per task event, or one JSON object per line.

The worker loop logs retries, revocations and dead letters (failures included) itself;
`task_events` adds the started and succeeded lines as hooks, at DEBUG: at INFO a line per
task costs a solo worker on no-op tasks about half its rate (measured on the memory
broker), and a busy worker's success lines are noise next to its metrics.
Passwords of the app's URLs are masked in every line, whatever logged it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from .urls import passwords, scrub

if TYPE_CHECKING:
    from .app import App

FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"

log = logging.getLogger("soloist.worker")


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, and task fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key in ("event", "task", "task_id", "runtime"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class Redact(logging.Filter):
    """Masks `secrets` in every record's message and exception text."""

    def __init__(self, secrets: set[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = scrub(record.getMessage(), self.secrets), None
        if record.exc_info:
            record.exc_text = scrub(
                logging.Formatter().formatException(record.exc_info), self.secrets
            )
            record.exc_info = None
        return True


def setup(level: str, fmt: str = "text") -> None:
    """Configure the root logger for a `soloist` command."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Client libraries log each failed reconnect attempt, with a traceback; the brokers
    # log an outage once, in a line a person can read.
    for noisy in ("pika", "redis"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


def redact(app: App) -> None:
    """Mask the passwords of the app's broker and result URLs in every log line."""
    secrets = passwords(app.broker_url) | passwords(app.result_url)
    if secrets:
        for handler in logging.getLogger().handlers:
            handler.addFilter(Redact(secrets))


def task_events(app: App) -> None:
    """Log a task's start and success (at DEBUG), with its id and name: hooks added only
    where the worker's log level, set before it starts (`--loglevel debug`), shows them.
    A hook that only returns still costs each task's start and end its call: about 10 µs
    of an idle worker's wake-up, run on caches gone cold."""
    if not log.isEnabledFor(logging.DEBUG):
        return

    def line(event: str, **info: Any) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        if event == "task_started":
            message = info["message"]
            task_id, task, text = message.id, message.task, "started"
        else:
            outcome = info["outcome"]
            task_id, task = outcome.task_id, outcome.task
            text = f"succeeded in {outcome.runtime:.3f}s"
        extra = {"event": event, "task": task, "task_id": task_id}
        log.debug("task %s[%s] %s", task, task_id, text, extra=extra)

    app.hooks.on("task_started")(line)
    app.hooks.on("task_succeeded")(line)
