"""Exceptions raised by Soloist, in one place so users can import them all from `soloist`."""

from __future__ import annotations


class SoloistError(Exception):
    """Base class of every error Soloist raises on purpose."""


class ConfigurationError(SoloistError):
    """A URL, option or app path that cannot be used."""


class BrokerUnavailable(SoloistError):
    """The broker or result store cannot be reached."""


class DecodeError(SoloistError):
    """A message body that cannot be turned back into a task call.

    `task` and `task_id` are set when the envelope named them before it went wrong, so the
    failure can be recorded where `get()` finds it."""

    def __init__(self, reason: str, task: str = "", task_id: str = "") -> None:
        super().__init__(reason)
        self.task = task
        self.task_id = task_id


class LimitExceeded(SoloistError):
    """A message, its arguments or a result over one of the app's limits."""


class MessageTooLarge(LimitExceeded):
    """A message over the configured size limit (raised on the producer side)."""


class Retry(SoloistError):
    """Raised inside a task to have it run again later.

    `countdown` overrides the task's back-off for this retry; `exc` is the reason kept
    if the retries run out.
    """

    def __init__(
        self,
        countdown: float | None = None,
        exc: BaseException | None = None,
        max_retries: int | None = None,
    ) -> None:
        super().__init__(f"retry in {countdown}s" if countdown is not None else "retry")
        self.countdown = countdown
        self.exc = exc
        self.max_retries = max_retries


class SoftTimeLimitExceeded(SoloistError):
    """Raised inside a task when its soft time limit passes, so it can clean up."""


class WorkerInterrupt(BaseException):
    """Raised into a running task by the worker itself (a cold shutdown, a revoke with
    terminate=True). Not the task's failure: the task runner lets it through, where it
    records any other exception, BaseExceptions like SystemExit included."""


class TimeLimitExceeded(SoloistError):
    """Recorded for a task stopped at its hard time limit."""


class TaskError(SoloistError):
    """What `Result.get()` raises for a task that failed on a worker.

    Carries the remote exception's type name, message and formatted traceback text.
    """

    def __init__(self, exc_type: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback


class ResultTimeout(SoloistError, TimeoutError):
    """`Result.get(timeout=…)` ran out of time before the task finished."""


class TaskRevoked(SoloistError):
    """`Result.get()` of a task that was revoked."""


class TaskTerminated(WorkerInterrupt):
    """Raised inside a task stopped by `revoke(terminate=True)`; it is recorded as revoked.

    A BaseException, like KeyboardInterrupt, so `except Exception` in task code lets it by.
    """
