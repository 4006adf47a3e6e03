"""The command line: errors are one line and a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from soloist import App
from tests.conftest import WorkerProcesses


def assert_one_line_error(done: object, code: int) -> None:
    stderr = done.stderr  # type: ignore[attr-defined]
    assert done.returncode == code, stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("Error")


@pytest.mark.parametrize(
    "app_path",
    ["no_such_module:app", "tests.support.sample_app:nothing", "tests.support.sample_app:add"],
)
def test_bad_app(workers: WorkerProcesses, app_path: str) -> None:
    assert_one_line_error(workers.run("worker", "-A", app_path, "--burst"), 2)


@pytest.mark.parametrize(
    "args", [["--prefetch", "0"], ["--pool", "gevent"], ["--lease", "-1"], ["--lease", "x"]]
)
def test_bad_options(workers: WorkerProcesses, args: list[str]) -> None:
    assert_one_line_error(workers.run("worker", "-A", "tests.support.sample_app:app", *args), 2)


def test_unreachable_broker(workers: WorkerProcesses, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/no/such/dir/x.db"
    workers.env["SOLOIST_BROKER_URL"] = url
    done = workers.run("worker", "-A", "tests.support.sample_app:app", "--burst")
    assert_one_line_error(done, 1)
    assert "cannot open SQLite" in done.stderr


def test_enqueue_then_work(workers: WorkerProcesses, sample_app: App) -> None:
    sent = workers.run("enqueue", "-A", "tests.support.sample_app:app", "add", "--args", "[20, 22]")
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip()
    assert workers.run("worker", "-A", "tests.support.sample_app:app", "--burst").returncode == 0
    assert sample_app.result(task_id).get(timeout=1) == 42


@pytest.mark.parametrize(
    "args", [["nope"], ["add", "--args", "{"], ["add", "--args", "{}"], ["add", "--kwargs", "[]"]]
)
def test_enqueue_bad_input(workers: WorkerProcesses, args: list[str]) -> None:
    assert_one_line_error(workers.run("enqueue", "-A", "tests.support.sample_app:app", *args), 2)


def test_demo_runs_and_summarises(workers: WorkerProcesses) -> None:
    done = workers.run("demo", "--tasks", "300")
    assert done.returncode == 0, done.stderr
    for word in ("done", "retried", "failed", "dead-lettered", "tasks/s"):
        assert word in done.stdout
    assert "unknown task" in done.stdout and "undecodable" in done.stdout
