"""The tasks both example web apps send, and the app their worker runs:

    soloist worker -A examples.tasks

The broker is SOLOIST_BROKER_URL (default: sqlite:///soloist.db in the working directory).
Creating the App opens nothing: connections open on first use, in each process, so
importing this module in a gunicorn master before it forks is safe.
"""

from __future__ import annotations

from typing import Any

from soloist import App
from soloist.errors import TaskError

app = App()


@app.task
def add(x: int, y: int) -> int:
    return x + y


def status(task_id: str) -> dict[str, Any]:
    """What a poll endpoint answers: the task's state, and its result or error once done."""
    result = app.result(task_id)
    answer: dict[str, Any] = {"id": task_id, "state": result.state}
    if answer["state"] in ("SUCCESS", "FAILURE"):
        try:
            answer["result"] = result.get(timeout=0)
        except TaskError as exc:
            answer["error"] = str(exc)  # "TypeError: ...", the traceback stays out
    return answer
