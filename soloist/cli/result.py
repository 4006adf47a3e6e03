"""`soloist result`: a task call's state, and its result or error, by id."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..results.base import FAILURE, FINAL_STATES, PENDING, REVOKED, SUCCESS
from .common import app_option, load_app

#: Exit codes: a script can tell a result from a failure from "not yet".
EXIT_SUCCEEDED, EXIT_FAILED, EXIT_NOT_FINISHED = 0, 1, 3


@click.command()
@app_option
@click.argument("task_id", metavar="ID")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="Wait up to this long for the task to finish.",
)
@click.option("--json", "as_json", is_flag=True, help="The whole record as JSON, for scripts.")
def result(app_path: str, task_id: str, wait: float, as_json: bool) -> None:
    """The state of task ID (PENDING, STARTED, RETRY, SUCCESS, FAILURE or REVOKED) and its
    result, or its error with the traceback.

    Exits 0 if it succeeded, 1 if it failed or was revoked, 3 if it has not finished."""
    app = load_app(app_path)
    raw = app.results.wait(task_id, wait) if wait else app.results.get(task_id)
    record: dict[str, Any] = {} if raw is None else app.codec.loads(raw[1])
    state = PENDING if raw is None else raw[0]
    if as_json:
        click.echo(json.dumps({"id": task_id, "state": state, **record}, default=repr))
    else:
        click.echo(state)
        if state == SUCCESS:
            click.echo(json.dumps(record.get("value"), default=repr))
        elif state == FAILURE:
            click.echo(f"{record.get('exc_type')}: {record.get('message')}")
            if record.get("traceback"):
                click.echo(str(record["traceback"]).rstrip())
        elif state == REVOKED and record.get("reason"):
            click.echo(f"reason: {record['reason']}")
        elif record:
            click.echo(json.dumps(record, default=repr))
    if state not in FINAL_STATES:
        sys.exit(EXIT_NOT_FINISHED)
    sys.exit(EXIT_SUCCEEDED if state == SUCCESS else EXIT_FAILED)
