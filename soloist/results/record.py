"""The records a task's result is stored as: what the worker writes and `Result` reads.

A record is a dict, serialized with the app's codec: `value` for a success, `exc_type`,
`message` and `traceback` for a failure; `done` is when it ended (unix time).
"""

from __future__ import annotations

import time
from typing import Any


def success_record(value: Any) -> dict[str, Any]:
    return {"value": value, "done": time.time()}


def failure_record(exc_type: str, message: str, traceback: str) -> dict[str, Any]:
    return {"exc_type": exc_type, "message": message, "traceback": traceback, "done": time.time()}
