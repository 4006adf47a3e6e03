"""Revoking a running workflow with terminate=True, on real worker processes: the step or
members running stop, and nothing after them runs."""

from __future__ import annotations

import pytest

from soloist import App, TaskRevoked, chain, chord
from soloist.results.base import REVOKED
from tests.conftest import WorkerProcesses


@pytest.mark.parametrize("pool", ["solo", "threads", "processes"])
def test_revoking_a_running_chain_stops_it(
    workers: WorkerProcesses, sample_app: App, pool: str
) -> None:
    proc = workers.start("--pool", pool)
    sleepy = sample_app.tasks["sleepy"]
    result = chain(sleepy.si(60, "first"), sleepy.si(0, "second")).apply_async()
    workers.wait_for("start first")
    assert result.revoke(terminate=True)
    with pytest.raises(TaskRevoked):
        result.get(timeout=10)
    assert [step.state for step in result.steps] == [REVOKED, REVOKED]
    assert sample_app.tasks["add"].delay(2, 3).get(timeout=10) == 5  # the worker goes on
    assert not any(line.startswith(("end first", "start second")) for line in workers.lines())
    assert proc.poll() is None


def test_revoking_a_running_chord_stops_its_members_and_its_callback(
    workers: WorkerProcesses, sample_app: App
) -> None:
    workers.start("--pool", "threads", "--concurrency", "2")
    sleepy, collect = sample_app.tasks["sleepy"], sample_app.tasks["collect"]
    result = chord([sleepy.si(60, "m0"), sleepy.si(60, "m1")], collect.s("c")).apply_async()
    workers.wait_for("start m0")
    workers.wait_for("start m1")
    assert result.revoke(terminate=True)
    with pytest.raises(TaskRevoked):
        result.get(timeout=10)
    assert [r.state for r in result.group] == [REVOKED, REVOKED]
    assert sample_app.tasks["add"].delay(2, 3).get(timeout=10) == 5
    assert not any(line.startswith(("end m", "collect")) for line in workers.lines())


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_a_step_stopped_by_its_pool_stops_the_rest_of_its_chain(
    workers: WorkerProcesses, sample_app: App, pool: str
) -> None:
    """The pool makes up the outcome of a task it stops: the worker still knows the
    message's workflow, so the steps after it are recorded revoked instead of waited for."""
    workers.start("--pool", pool)
    sleepy = sample_app.tasks["sleepy"]
    result = chain(sleepy.si(60, "first"), sleepy.si(0, "second")).apply_async()
    workers.wait_for("start first")
    assert result.steps[0].revoke(terminate=True)  # that step only
    with pytest.raises(TaskRevoked):
        result.get(timeout=10)
    assert not any(line.startswith("start second") for line in workers.lines())
