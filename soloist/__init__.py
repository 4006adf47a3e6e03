"""Soloist: a distributed task queue built around the inline ("solo") worker."""

from .app import App
from .errors import (
    ConfigurationError,
    LimitExceeded,
    MessageTooLarge,
    ResultTimeout,
    Retry,
    SoftTimeLimitExceeded,
    SoloistError,
    TaskError,
    TaskRevoked,
    TimeLimitExceeded,
)
from .results.handle import Result
from .task import AsyncTask, Request, Task
from .worker import Worker

__all__ = [
    "App",
    "AsyncTask",
    "ConfigurationError",
    "LimitExceeded",
    "MessageTooLarge",
    "Request",
    "Result",
    "ResultTimeout",
    "Retry",
    "SoftTimeLimitExceeded",
    "SoloistError",
    "Task",
    "TaskError",
    "TaskRevoked",
    "TimeLimitExceeded",
    "Worker",
]

__version__ = "0.1.0"
