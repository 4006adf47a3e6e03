"""The Flask and Starlette examples (examples/): enqueue in a request, a real worker
runs the task, the page polls its result."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from soloist import App
from tests.conftest import WorkerProcesses


@pytest.fixture
def tasks_app(sqlite_url: str) -> Iterator[App]:
    from examples import tasks

    tasks.app.configure(sqlite_url, sqlite_url)
    yield tasks.app
    tasks.app.close()


def _flask() -> tuple[Callable[..., Any], Callable[..., Any]]:
    pytest.importorskip("flask")
    from examples.flask_app import web

    client = web.test_client()
    return client.post, client.get


def _starlette() -> tuple[Callable[..., Any], Callable[..., Any]]:
    testclient = pytest.importorskip("starlette.testclient")
    from examples.starlette_app import web

    client = testclient.TestClient(web)
    return client.post, client.get


def _json(response: Any) -> Any:
    """The body of a Flask (a property) or httpx (a method) test response."""
    return response.json() if callable(response.json) else response.json


def _poll(get: Callable[..., Any], task_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = get(f"/tasks/{task_id}")
        assert response.status_code == 200
        answer: dict[str, Any] = _json(response)
        if answer["state"] in ("SUCCESS", "FAILURE"):
            return answer
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish within {timeout}s")


@pytest.mark.parametrize("framework", [_flask, _starlette], ids=["flask", "starlette"])
def test_enqueue_in_a_request_and_poll_the_result(
    framework: Callable[[], tuple[Callable[..., Any], Callable[..., Any]]],
    tasks_app: App,
    workers: WorkerProcesses,
) -> None:
    post, get = framework()
    sent = post("/add", json={"x": 2, "y": 3})
    assert sent.status_code == 202
    body = _json(sent)
    assert _json(get(f"/tasks/{body['id']}"))["state"] == "PENDING"
    bad = post("/add", json={"x": "two", "y": 3})  # fails on the worker: str + int

    workers.start(app="examples.tasks:app")
    assert _poll(get, body["id"]) == {"id": body["id"], "state": "SUCCESS", "result": 5}
    failed = _poll(get, _json(bad)["id"])
    assert failed["state"] == "FAILURE" and failed["error"].startswith("TypeError:"), failed
