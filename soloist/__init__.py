"""Soloist: a distributed task queue built around the inline ("solo") worker."""

from . import eager  # noqa: F401  (registers the eager broker with App)
from .app import App
from .canvas import Chain, Chord, Group, Signature, chain, chord, group
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
from .result import Result
from .task import AsyncTask, Request, Task
from .worker import Worker
from .workflow_result import ChainResult, ChordResult, GroupResult

__all__ = [
    "App",
    "AsyncTask",
    "Chain",
    "ChainResult",
    "Chord",
    "ChordResult",
    "ConfigurationError",
    "Group",
    "GroupResult",
    "LimitExceeded",
    "MessageTooLarge",
    "Request",
    "Result",
    "ResultTimeout",
    "Retry",
    "Signature",
    "SoftTimeLimitExceeded",
    "SoloistError",
    "Task",
    "TaskError",
    "TaskRevoked",
    "TimeLimitExceeded",
    "Worker",
    "chain",
    "chord",
    "group",
]

__version__ = "0.1.0"
