"""A task's state is always known: STARTED, RETRY, FAILURE for a message that never ran,
REVOKED for one that expired."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from soloist import App, TaskError, TaskRevoked
from soloist.message import Message
from soloist.results import PENDING, RETRY, STARTED
from tests.conftest import WorkerProcesses
from tests.support.waiting import wait_until


def wait_state(app: App, task_id: str, state: str, timeout: float = 20) -> None:
    wait_until(lambda: app.result(task_id).state == state, timeout, f"{task_id} to be {state}")


def test_a_message_dead_lettered_before_it_ran_records_failure_with_the_reason(
    workers: WorkerProcesses, sample_app: App
) -> None:
    unknown = Message("no.such.task")
    misfit = Message("add", (1, 2, 3))
    for message in (unknown, misfit):
        sample_app.broker.publish("default", sample_app.encode(message))
    sample_app.broker.publish("default", b'j{"v":1,"id":"garbled","task":"add","args":"1,2"}')
    done = workers.run("worker", "-A", "tests.support.sample_app:app", "--burst")
    assert done.returncode == 0, done.stderr
    with pytest.raises(TaskError, match=r"unknown task 'no\.such\.task'") as caught:
        sample_app.result(unknown.id).get(timeout=0)
    assert caught.value.exc_type == "DeadLettered"
    with pytest.raises(TaskError, match="arguments do not fit add") as caught:
        sample_app.result(misfit.id).get(timeout=0)
    assert caught.value.exc_type == "DeadLettered"
    with pytest.raises(TaskError, match="undecodable message: args is not a list"):
        sample_app.result("garbled").get(timeout=0)
    assert len(sample_app.broker.dead_letters("default")) == 3


def test_retry_is_recorded_while_it_waits(workers: WorkerProcesses, sample_app: App) -> None:
    result = sample_app.tasks["retry_later"].delay()
    workers.start()
    wait_state(sample_app, result.id, RETRY)
    info = result.info()
    assert info is not None and info["reason"] == "ConnectionError: try later"
    assert info["retries"] == 1 and info["eta"] > time.time() + 500


def test_started_is_recorded_only_for_tasks_that_ask(
    workers: WorkerProcesses, sample_app: App
) -> None:
    tracked = sample_app.tasks["tracked"].delay(30, "tracked")
    plain = sample_app.tasks["sleepy"].delay(30, "plain")
    workers.start("--pool", "threads", "-c", "2")
    workers.wait_for("start tracked")
    workers.wait_for("start plain")
    assert tracked.state == STARTED
    info = tracked.info()
    assert info is not None and info["worker"]
    assert plain.state == PENDING  # nothing written for a task that did not ask


def test_an_expired_call_is_revoked_not_run_and_counted(
    workers: WorkerProcesses, sample_app: App
) -> None:
    gone = dt.datetime.now() - dt.timedelta(seconds=1)
    expired = sample_app.tasks["sleepy"].apply_async((0, "late"), expires=gone)
    fresh = sample_app.tasks["sleepy"].apply_async((0, "fresh"), expires=3600)
    done = workers.run("worker", "-A", "tests.support.sample_app:app", "--burst")
    assert done.returncode == 0, done.stderr
    with pytest.raises(TaskRevoked, match="expired"):
        expired.get(timeout=0)
    assert fresh.get(timeout=0) == "fresh"
    assert [line.split()[1] for line in workers.lines() if line.startswith("start")] == ["fresh"]
    assert sample_app.broker.dead_letters("default") == []
    assert "1 expired" in done.stderr and "0 dead-lettered" in done.stderr
