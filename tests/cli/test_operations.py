"""`soloist status`, `soloist dead-letters` and worker logs, with real worker processes."""

from __future__ import annotations

import json
from typing import Any

from soloist import App
from soloist.brokers.sqlite import SQLiteBroker
from tests.conftest import WorkerProcesses
from tests.support.waiting import wait_until
from tests.test_cli import assert_one_line_error

APP = ("-A", "tests.support.sample_app:app")


def test_status_shows_queues_and_a_worker_busy_in_a_long_task(
    workers: WorkerProcesses, sample_app: App
) -> None:
    proc = workers.start("-Q", "default,extra")
    long = sample_app.tasks["sleepy"].delay(60, "long")
    sample_app.tasks["add"].apply_async((1, 2), countdown=300)
    workers.wait_for("start long")
    broker = sample_app.broker
    assert isinstance(broker, SQLiteBroker)
    broker.heartbeat("ghost", b"{}", ttl=300)  # a worker silent for a minute, not yet dropped
    broker.beats.connection().execute(
        "UPDATE soloist_workers SET seen_at = seen_at - 60 WHERE id = 'ghost'"
    )

    def snapshot() -> Any:
        done = workers.run("status", *APP, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def long_task_2s_in() -> Any:
        snap = snapshot()
        running = [r for w in snap["workers"] for r in w["running"]]
        return snap if any(r["id"] == long.id and r["for"] >= 2 for r in running) else None

    snap = wait_until(long_task_2s_in, 30, "the long task 2 s in")
    queues = {q["queue"]: q for q in snap["queues"]}
    assert queues["default"] | {"queue": "", "dead": 0} == {
        "queue": "", "depth": 1, "delayed": 1, "in_flight": 1, "dead": 0, "lost": None,
    }  # fmt: skip
    assert "extra" in queues  # consumed by a worker though no task names it
    (busy,) = [w for w in snap["workers"] if w["pid"] == proc.pid]
    assert not busy["gone"] and busy["pool"] == "solo"
    (running,) = busy["running"]
    assert running["id"] == long.id and running["task"] == "sleepy" and running["for"] >= 2
    assert [w["gone"] for w in snap["workers"] if w["id"] == "ghost"] == [True]
    workers.env["COLUMNS"] = "250"  # rich fits the table to the terminal
    table = workers.run("status", *APP)
    assert table.returncode == 0 and "sleepy" in table.stdout and long.id in table.stdout
    long.revoke(terminate=True)
    proc.terminate()
    assert proc.wait(timeout=20) == 0


def test_dead_letters_list_show_requeue_drop(workers: WorkerProcesses, sample_app: App) -> None:
    flaky = sample_app.tasks["fail_first"].delay("x" * 500)
    hopeless = sample_app.tasks["fail"].delay("h")
    assert workers.run("worker", *APP, "--burst").returncode == 0
    assert flaky.state == "FAILURE"
    listed = workers.run("dead-letters", "list", *APP, "--json")
    letters = {e["task_id"]: e for e in json.loads(listed.stdout)}
    entry = letters[flaky.id]
    assert entry["task"] == "fail_first" and "RuntimeError: first run" in entry["reason"]
    assert entry["delivery_count"] == 1 and "x" * 500 in entry["args"]  # whole for scripts
    shown = json.loads(workers.run("dead-letters", "show", *APP, entry["id"]).stdout)
    assert "x" * 400 in shown["args"]
    workers.env["COLUMNS"] = "250"
    table = workers.run("dead-letters", "list", *APP)
    assert "fail_first" in table.stdout
    requeued = workers.run("dead-letters", "requeue", *APP, entry["id"])
    assert requeued.stdout.strip() == "requeued 1", requeued.stderr
    again = workers.run("dead-letters", "requeue", *APP, entry["id"])
    assert "requeued 0" in again.stdout and "not found" in again.stdout
    assert workers.run("worker", *APP, "--burst").returncode == 0
    assert flaky.get(timeout=5) == "x" * 500  # the rerun's result was recorded
    dropped = workers.run("dead-letters", "drop", *APP, "--all")
    assert dropped.stdout.strip() == "dropped 1"
    assert hopeless.state == "FAILURE"
    assert json.loads(workers.run("dead-letters", "list", *APP, "--json").stdout) == []


def test_dead_letters_bad_arguments(workers: WorkerProcesses) -> None:
    assert_one_line_error(workers.run("dead-letters", "requeue", *APP), 2)
    assert_one_line_error(workers.run("dead-letters", "drop", *APP, "1", "--all"), 2)
    assert_one_line_error(workers.run("dead-letters", "show", *APP, "nope"), 2)
    assert_one_line_error(workers.run("status", *APP, "--interval", "0"), 2)


def test_json_logs_one_object_per_line_with_task_ids(
    workers: WorkerProcesses, sample_app: App
) -> None:
    ok = sample_app.tasks["add"].delay(1, 2)
    bad = sample_app.tasks["fail"].delay("j")
    done = workers.run("worker", *APP, "--burst", "--log-format", "json", "-l", "debug")
    assert done.returncode == 0
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    events = {(e.get("event"), e.get("task_id")) for e in entries}
    assert ("task_started", ok.id) in events and ("task_succeeded", ok.id) in events
    assert any(bad.id in e["message"] and e["level"] == "WARNING" for e in entries)


def test_no_password_in_any_line(workers: WorkerProcesses) -> None:
    workers.env["SOLOIST_BROKER_URL"] = "redis://:s3cret@127.0.0.1:1/0"
    for fmt in ("text", "json"):
        done = workers.run("worker", *APP, "--burst", "--log-format", fmt)
        assert_one_line_error(done, 1)
        assert "s3cret" not in done.stderr + done.stdout
        assert ":***@" in done.stderr
