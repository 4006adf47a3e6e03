"""`dead-letters requeue` under concurrency: two operators at once never erase a rerun's
result (App.requeue_dead forgets only the failure it read, while the letter is still dead)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from soloist.brokers.amqp import AMQPBroker
from soloist.brokers.redis_connection import RedisConnection
from soloist.results.base import FAILURE, SUCCESS
from tests.conftest import ROOT, WorkerProcesses
from tests.support import sample_app as sample
from tests.support.redis_support import delete_prefix, prefixed_url
from tests.support.servers import AMQP_URL, REDIS_URL, require
from tests.support.waiting import wait_until

LETTERS = 150


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(broker URL, result URL, queue): on RabbitMQ, results on Redis and a queue of the
    test's own (the server is shared), deleted after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/soloist.db", f"sqlite:///{tmp_path}/soloist.db", "default"
        return
    require("Redis", "127.0.0.1", 6379)
    results = prefixed_url(f"t-{uuid.uuid4().hex[:8]}:", REDIS_URL)
    queue = "default"
    if request.param == "amqp":
        require("RabbitMQ", "127.0.0.1", 5672)
        broker, queue = AMQP_URL, f"requeue-{uuid.uuid4().hex[:8]}"
    else:
        broker = results
    yield broker, results, queue
    conn = RedisConnection(results)
    delete_prefix(conn)
    conn.close()
    if request.param == "amqp":
        admin = AMQPBroker(AMQP_URL)
        admin.delete(queue)
        admin.close()


def test_two_operators_requeueing_at_once_erase_no_rerun_result(
    where: tuple[str, str, str], workers: WorkerProcesses
) -> None:
    broker, results, queue = where
    workers.use(broker, results)
    app = sample.app
    app.configure(broker, results)
    try:
        calls = [sample.fail_first.apply_async((f"t{n}",), queue=queue) for n in range(LETTERS)]
        for _ in range(2):
            workers.start("--pool", "threads", "-c", "4", "-Q", queue)
        wait_until(lambda: app.broker.stats(queue).dead == LETTERS)
        assert all(app.results.get(c.id)[0] == FAILURE for c in calls)  # type: ignore[index]
        # Two operators at once, each through the CLI (which calls App.requeue_dead).
        command = [sys.executable, "-m", "soloist", "dead-letters", "requeue", "-A",
                   "tests.support.sample_app:app", "-Q", queue, "--all"]  # fmt: skip
        operators = [
            subprocess.Popen(command, env=workers.env, cwd=ROOT, text=True, stdout=subprocess.PIPE)
            for _ in range(2)
        ]
        moved = [int(op.communicate(timeout=120)[0].split()[-1]) for op in operators]
        assert sum(moved) == LETTERS, moved  # each letter moved once
        # Every rerun stores SUCCESS; an erased one leaves nothing, for good.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [app.results.get(c.id) for c in calls]
            if all(s is not None and s[0] == SUCCESS for s in states):
                break
            time.sleep(0.1)
        erased = sum(1 for s in states if s is None)
        assert erased == 0, f"{erased} of {LETTERS} reruns' results erased"
        assert all(s is not None and s[0] == SUCCESS for s in states)
        assert app.broker.stats(queue).dead == 0
    finally:
        app.close()


def test_requeue_dead_forgets_only_a_failure(tmp_path: Path) -> None:
    """In the library: a letter's FAILURE is forgotten as it moves; any other record (a
    rerun's SUCCESS) stays; an undecodable letter is requeued as it is."""
    url = f"sqlite:///{tmp_path}/soloist.db"
    app = sample.app
    app.configure(url, url)
    try:
        failed, done = sample.add.delay(1, 1), sample.add.delay(2, 2)
        app.broker.publish("default", b"garbage")
        for delivery in app.broker.fetch(["default"], 3, 30, 1):
            assert app.broker.dead_letter(delivery, "test")
        app.results.put(failed.id, FAILURE, b"failed", 60)
        app.results.put(done.id, SUCCESS, b"done", 60)
        ids = [letter.id for letter in app.broker.dead_letters("default")]
        assert app.requeue_dead("default", ids) == 3
        assert app.results.get(failed.id) is None
        assert app.results.get(done.id) == (SUCCESS, b"done")
        assert app.requeue_dead("default", ids) == 0
        assert app.requeue_dead("default", []) == 0
    finally:
        app.close()
