"""Flask: enqueue in a request, poll the result.

soloist worker -A examples.tasks                      # the worker
gunicorn -w 4 --preload examples.flask_app:web        # the web tier (or flask run)

curl -X POST localhost:8000/add -H 'content-type: application/json' -d '{"x": 2, "y": 3}'
curl localhost:8000/tasks/<id>                        # {"state": "SUCCESS", "result": 5}
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from examples.tasks import add, status

web = Flask(__name__)


@web.post("/add")
def enqueue() -> tuple[dict[str, Any], int]:
    body = request.get_json(force=True)
    result = add.delay(body["x"], body["y"])
    return {"id": result.id}, 202


@web.get("/tasks/<task_id>")
def poll(task_id: str) -> dict[str, Any]:
    return status(task_id)
