"""Celery's producer on RabbitMQ (its own classic queue), Soloist workers consuming it,
results in Celery's Redis backend."""

from __future__ import annotations

import signal
import socket

import pytest

from tests.celery_compat.conftest import CeleryRig

exceptions = pytest.importorskip("celery.exceptions")


def test_results_retries_and_failures(amqp_rig: CeleryRig) -> None:
    rig = amqp_rig
    rig.worker()
    assert rig.send("add", 2, 3).get(timeout=30) == 5
    assert rig.send("flaky", 2).get(timeout=20) == 2
    with pytest.raises(ValueError, match="boom"):
        rig.send("fail", "boom").get(timeout=20)
    assert rig.send("add", 1, 2, countdown=1).get(timeout=20) == 3


def test_hard_time_limit_revoke_and_the_seed_case(amqp_rig: CeleryRig) -> None:
    rig = amqp_rig
    first = rig.worker()
    assert rig.send("squares", 4).get(timeout=30) == [0, 1, 4, 9]
    running = rig.send("sleeper", 30, "long")
    rig.wait_for(lambda: "start long" in rig.lines(), what="the long task started")
    rig.app.control.revoke(running.id, terminate=True)
    with pytest.raises(exceptions.TaskRevokedError):
        running.get(timeout=20)
    with pytest.raises(exceptions.TimeLimitExceeded):
        rig.send("stuck").get(timeout=20)
    assert first.wait(timeout=20) == 4
    rig.worker()
    assert rig.send("add", 3, 3).get(timeout=30) == 6


def test_a_killed_worker_loses_nothing(amqp_rig: CeleryRig) -> None:
    rig = amqp_rig
    first = rig.worker()
    job = rig.send("sleeper", 1, "kill-me")
    rig.wait_for(lambda: "start kill-me" in rig.lines(), what="the task started")
    first.send_signal(signal.SIGKILL)
    first.wait()
    rig.worker()
    assert job.get(timeout=30) == "kill-me"
    assert rig.lines().count("start kill-me") == 2


@pytest.mark.slow
def test_a_long_inline_task_keeps_its_delivery_with_a_2s_heartbeat(amqp_rig: CeleryRig) -> None:
    rig = amqp_rig
    rig.worker()
    job = rig.send("sleeper", 20, "long")
    rig.wait_for(lambda: "start long" in rig.lines(), what="the long task started")
    rig.worker()
    assert job.get(timeout=60) == "long"
    assert rig.lines().count("start long") == 1


def test_dead_letters_and_the_connection_fence(amqp_rig: CeleryRig) -> None:
    from soloist.celery.amqp import CeleryAMQPBroker, amqp_url

    rig = amqp_rig
    url = amqp_url(rig.broker, rig.app.conf)
    unknown = rig.app.send_task("tests.support.celery_sample.nope", (1,))
    rig.send("add", 1, 1)
    broker = CeleryAMQPBroker(url)
    try:
        first = broker.fetch([rig.queue], 2, 30, 10)
        while len(first) < 2:
            first += broker.fetch([rig.queue], 2 - len(first), 30, 10)
        assert first[0].id == unknown.id
        assert broker.dead_letter(first[0], "unknown task") is True
        (letter,) = broker.dead_letters(rig.queue)
        assert (letter.id, letter.reason) == (unknown.id, "unknown task")
        broker._drop()  # the connection is lost: RabbitMQ requeues what it held
        assert broker.ack(first[1]) is False
        assert broker.extend(first[1:], 30) == first[1:]
        (again,) = broker.fetch([rig.queue], 2, 30, 10)
        assert (again.id, again.delivery_count) == (first[1].id, 2)
        # RabbitMQ closes a channel on an unknown delivery tag, as it does past its
        # consumer_timeout: the deliveries on it are requeued, and become stale here.
        broker._channel.basic_ack(999_999)
        (third,) = broker.fetch([rig.queue], 2, 30, 10)
        assert third.id == first[1].id
        assert broker.ack(again) is False
        assert broker.ack(third) is True
        assert broker.requeue_dead(rig.queue) == 1
        (back,) = broker.fetch([rig.queue], 2, 30, 10)
        assert back.id == unknown.id
        assert broker.dead_letters(rig.queue) == []
    finally:
        broker.close()


def test_inspect_ping_is_answered(amqp_rig: CeleryRig) -> None:
    rig = amqp_rig
    worker = rig.worker()
    assert rig.send("add", 1, 1).get(timeout=20) == 2  # it is up
    name = f"soloist.{worker.pid}@{socket.gethostname()}"
    replies = rig.app.control.ping(destination=[name], timeout=10, limit=1)
    assert replies == [{name: {"ok": "pong"}}]
