"""A worker's start: it reaches everything it needs before its first fetch, and says where
it works."""

from __future__ import annotations

import pytest

from soloist import App
from soloist.urls import shown
from tests.conftest import WorkerProcesses
from tests.support.redis_support import refusing_port


@pytest.mark.parametrize(
    ("results", "says"),
    [
        ("bogus://nowhere", "unknown result store URL scheme 'bogus'"),
        # A port nobody listens on, chosen as the test runs (the id must not vary between
        # the processes of a parallel run).
        ("redis://:pw@127.0.0.1:{port}/0", "result store redis://:***@127.0.0.1"),
        ("sqlite:////nonexistent/dir/r.db", "result store sqlite:////nonexistent/dir/r.db"),
    ],
)
def test_an_unusable_result_store_stops_the_worker_before_any_task(
    workers: WorkerProcesses, sample_app: App, results: str, says: str
) -> None:
    sample_app.tasks["sleepy"].delay(0, "once")
    with refusing_port() as port:
        workers.use(workers.url, results.format(port=port))
        done = workers.run("worker", "-A", "tests.support.sample_app:app", "--burst")
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and says in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "pw@" not in done.stderr
    assert workers.lines() == []  # the task never ran ...
    assert sample_app.broker.depth("default") == 1  # ... and waits for a worker that can


def test_the_ready_line_says_where_the_worker_works(
    workers: WorkerProcesses, sample_app: App
) -> None:
    done = workers.run("worker", "-A", "tests.support.sample_app:app", "--burst", "-Q", "default,b")
    assert done.returncode == 0, done.stderr
    ready = next(line for line in done.stderr.splitlines() if " ready: " in line)
    path = workers.url.removeprefix("sqlite:///")
    assert f"broker sqlite:///{path}, results sqlite:///{path}" in ready, ready
    assert "queues default,b, pool solo, concurrency 1" in ready, ready


def test_shown_masks_passwords_and_makes_sqlite_paths_absolute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir("/tmp")
    assert shown("sqlite:///soloist.db?synchronous=full") == (
        "sqlite:////tmp/soloist.db?synchronous=full"
    )
    assert shown("amqp://u:secret@h:5672/") == "amqp://u:***@h:5672/"
