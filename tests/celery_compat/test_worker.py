"""`soloist worker -A tests.support.celery_sample:app` runs an unchanged Celery app: Celery's own
producer sends, Celery's AsyncResult reads what the Soloist worker recorded."""

from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import time

import pytest

from tests.celery_compat.conftest import CeleryRig

exceptions = pytest.importorskip("celery.exceptions")


def test_results_in_celerys_format(rig: CeleryRig) -> None:
    rig.worker()
    assert rig.send("add", 2, 3).get(timeout=20) == 5
    assert rig.send("shared_mul", 4, 5).get(timeout=10) == 20
    failed = rig.send("fail", "boom")
    with pytest.raises(ValueError, match="boom"):
        failed.get(timeout=10)
    assert failed.state == "FAILURE"
    assert "ValueError: boom" in failed.traceback
    quiet = rig.send("quiet", "q1")
    rig.wait_for(lambda: "quiet q1" in rig.lines(), what="the ignore_result task ran")
    assert rig.send("add", 1, 1).get(timeout=10) == 2  # it is settled by now
    assert quiet.state == "PENDING"  # nothing stored
    meta = json.loads(rig.redis.get(rig.key(f"celery-task-meta-{failed.id}")) or b"{}")
    assert meta["result"]["exc_type"] == "ValueError"
    assert meta["result"]["exc_module"] == "builtins"


def test_retries_and_autoretry(rig: CeleryRig) -> None:
    worker = rig.worker()
    flaky = rig.send("flaky", 2)
    assert flaky.get(timeout=20) == 2
    assert [line.split()[2] for line in rig.lines() if line.startswith("flaky")] == ["0", "1", "2"]
    gave_up = rig.send("always_keyerror")
    with pytest.raises(KeyError):
        gave_up.get(timeout=20)
    assert [line for line in rig.lines() if line.startswith("keyerror")] == [
        f"keyerror {gave_up.id} {n}" for n in range(3)
    ]
    assert rig.lines().count(f"worker_process_init {worker.pid}") == 1  # as Celery's solo


def test_countdown_eta_expires_and_priority(rig: CeleryRig) -> None:
    rig.worker()
    sent = time.time()
    assert rig.send("add", 1, 2, countdown=1).get(timeout=20) == 3
    assert time.time() - sent >= 1
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    expired = rig.send("add", 1, 1, expires=past)
    with pytest.raises(exceptions.TaskRevokedError):
        expired.get(timeout=10)
    assert rig.send("add", 2, 2, priority=5).get(timeout=10) == 4


def test_soft_and_hard_time_limits_in_solo(rig: CeleryRig) -> None:
    first = rig.worker()
    assert rig.send("soft").get(timeout=20) == "cleaned up"
    stuck = rig.send("stuck")
    with pytest.raises(exceptions.TimeLimitExceeded):
        stuck.get(timeout=20)
    assert first.wait(timeout=20) == 4  # the solo worker ends itself at a hard limit
    assert rig.lines().count("stuck") == 1
    rig.worker()  # a fresh one carries on; the stuck message was dead-lettered
    assert rig.send("add", 3, 3).get(timeout=20) == 6
    assert rig.lines().count("stuck") == 1


def test_revoke_with_terminate_and_track_started(rig: CeleryRig) -> None:
    rig.worker()
    tracked = rig.send("tracked", 0.5)
    rig.wait_for(lambda: tracked.state == "STARTED", what="STARTED recorded")
    assert tracked.get(timeout=10) == "done"
    running = rig.send("sleeper", 30, "long")
    rig.wait_for(lambda: "start long" in rig.lines(), what="the long task started")
    rig.app.control.revoke(running.id, terminate=True)
    with pytest.raises(exceptions.TaskRevokedError):
        running.get(timeout=10)
    assert running.state == "REVOKED"
    waiting = rig.send("add", 1, 1, countdown=2)
    running.app.control.revoke(waiting.id)
    with pytest.raises(exceptions.TaskRevokedError):
        waiting.get(timeout=10)
    assert rig.send("add", 5, 5).get(timeout=10) == 10  # the worker lives on
    assert "end long" not in rig.lines()


def test_seed_case_process_pool_inside_a_task(rig: CeleryRig) -> None:
    rig.worker()
    assert rig.send("squares", 6).get(timeout=30) == [0, 1, 4, 9, 16, 25]


def test_threads_pool(rig: CeleryRig) -> None:
    rig.worker("--pool", "threads", "-c", "4")
    results = [rig.send("add", i, i) for i in range(20)]
    assert [r.get(timeout=20) for r in results] == [2 * i for i in range(20)]
    assert rig.send("soft").get(timeout=20) == "cleaned up"


def test_bad_messages_are_dead_lettered_with_the_reason(rig: CeleryRig) -> None:
    from soloist.celery.broker import KombuRedisBroker, broker_url
    from tests.support.servers import REDIS_URL

    rig.worker()
    rig.redis.lpush(rig.key("celery"), b"not json at all")
    unknown = rig.send("add", 1, 1)  # sent under a name the worker does not know:
    unknown_name = rig.app.send_task("tests.support.celery_sample.nope", (1,))
    assert unknown.get(timeout=20) == 2
    broker = KombuRedisBroker(broker_url(REDIS_URL, {"global_keyprefix": rig.prefix}))
    try:
        rig.wait_for(lambda: len(broker.dead_letters("celery")) == 2, what="two dead letters")
        reasons = sorted(d.reason for d in broker.dead_letters("celery"))
    finally:
        broker.close()
    assert reasons[0].startswith("not a kombu message")
    assert reasons[1] == "unknown task 'tests.support.celery_sample.nope'"
    assert unknown_name.state == "PENDING"


def test_a_killed_worker_loses_nothing(rig: CeleryRig) -> None:
    first = rig.worker("--lease", "2")
    job = rig.send("sleeper", 1, "kill-me")
    rig.wait_for(lambda: "start kill-me" in rig.lines(), what="the task started")
    first.send_signal(signal.SIGKILL)
    first.wait()
    rig.worker("--lease", "2")
    assert job.get(timeout=30) == "kill-me"
    assert rig.lines().count("start kill-me") == 2


@pytest.mark.slow
def test_a_long_inline_task_outlives_the_visibility_timeout_once(
    make_rig: object,
) -> None:
    """A 20 s task, a 5 s visibility timeout: the keeper's renewals keep every worker, a
    Celery one sharing the queue included, from restoring and running it again."""
    assert callable(make_rig)
    rig: CeleryRig = make_rig(visibility=5)
    rig.worker("--lease", "2")
    job = rig.send("sleeper", 20, "long")
    rig.wait_for(lambda: "start long" in rig.lines(), what="the long task started")
    rig.worker("--lease", "2")
    rig.worker("-P", "solo", "--without-mingle", "--without-gossip", command="celery")
    assert job.get(timeout=60) == "long"
    assert rig.lines().count("start long") == 1


def test_processes_pool(rig: CeleryRig) -> None:
    rig.worker("--pool", "processes", "-c", "2")
    results = [rig.send("add", i, i) for i in range(10)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(10)]
    assert rig.send("soft").get(timeout=20) == "cleaned up"
    assert rig.send("squares", 4).get(timeout=30) == [0, 1, 4, 9]
    stuck = rig.send("stuck")
    with pytest.raises(exceptions.TimeLimitExceeded):
        stuck.get(timeout=20)
    assert rig.send("add", 2, 2).get(timeout=20) == 4  # a fresh child took over


def test_inspect_ping_is_answered(rig: CeleryRig) -> None:
    worker = rig.worker()
    assert rig.send("add", 1, 1).get(timeout=20) == 2  # it is up
    name = f"soloist.{worker.pid}@{socket.gethostname()}"
    replies = rig.app.control.ping(destination=[name], timeout=10, limit=1)
    assert replies == [{name: {"ok": "pong"}}]


def test_celery_and_soloist_workers_share_a_queue(rig: CeleryRig) -> None:
    """A migration in progress: each message runs once, whichever kind of worker took it."""
    rig.worker("-P", "solo", "--without-mingle", "--without-gossip", command="celery")
    rig.worker("--prefetch", "2")
    jobs = [rig.send("sleeper", 0.02, f"shared-{i}") for i in range(60)]
    assert [job.get(timeout=60) for job in jobs] == [f"shared-{i}" for i in range(60)]
    starts = [line for line in rig.lines() if line.startswith("start shared-")]
    assert sorted(starts) == sorted(f"start shared-{i}" for i in range(60))


def test_protocol_1_messages(rig: CeleryRig) -> None:
    rig.worker()
    rig.app.conf.task_protocol = 1
    assert rig.send("add", 4, 5).get(timeout=20) == 9
    assert rig.send("flaky", 1).get(timeout=20) == 1
    sent = time.time()
    assert rig.send("add", 1, 1, countdown=1).get(timeout=20) == 2
    assert time.time() - sent >= 1


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_revoke_with_terminate_in_other_pools(rig: CeleryRig, pool: str) -> None:
    rig.worker("--pool", pool, "-c", "2")
    running = rig.send("sleeper", 30, "long")
    rig.wait_for(lambda: "start long" in rig.lines(), what="the long task started")
    rig.app.control.revoke(running.id, terminate=True)
    with pytest.raises(exceptions.TaskRevokedError):
        running.get(timeout=20)
    assert rig.send("add", 5, 5).get(timeout=20) == 10
    assert "end long" not in rig.lines()
