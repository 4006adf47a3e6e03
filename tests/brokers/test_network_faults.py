"""Network faults between a real worker process and its broker: resets and a black hole.

The worker talks to Redis through a proxy that resets every connection several times and
then swallows all traffic for longer than two socket timeouts. Nothing is lost, and the
worker comes back by itself: it never hangs on a dead connection.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from soloist import App
from soloist.errors import ResultTimeout
from tests.conftest import WorkerProcesses
from tests.support.netfaults import FaultyProxy
from tests.support.redis_support import FlushingRedisBroker, FlushingRedisResultStore, prefixed_url
from tests.support.servers import AMQP_URL, require


@pytest.fixture
def proxy() -> Iterator[FaultyProxy]:
    require("Redis", "127.0.0.1", 6379)
    p = FaultyProxy(("127.0.0.1", 6379))
    yield p
    p.close()


@pytest.mark.slow
def test_resets_and_black_hole_lose_nothing(workers: WorkerProcesses, proxy: FaultyProxy) -> None:
    from tests.support import sample_app

    prefix = f"soloist-net-{uuid.uuid4().hex[:8]}:"
    direct = prefixed_url(prefix)
    broker, results = FlushingRedisBroker(direct), FlushingRedisResultStore(direct)
    app: App = sample_app.app
    app.configure(broker, results)
    try:
        via_proxy = prefixed_url(prefix, f"redis://127.0.0.1:{proxy.port}/15", socket_timeout=1)
        workers.use(via_proxy)
        handles = [app.tasks["sleepy"].delay(0.02, f"t{i}") for i in range(300)]
        worker = workers.start("--lease", "5", "--prefetch", "5")

        def faults() -> None:
            # Once it runs tasks: a worker that cannot reach its store at start exits, by
            # design, and on a loaded machine starting can take longer than a second.
            workers.wait_for("start", timeout=60)
            for _ in range(4):
                proxy.reset_all()
                time.sleep(0.7)
            proxy.blackhole(True)
            time.sleep(3.0)  # three socket timeouts of silence
            proxy.blackhole(False)

        chaos = threading.Thread(target=faults)
        chaos.start()
        try:
            assert [h.get(timeout=90) for h in handles] == [f"t{i}" for i in range(300)]
        except ResultTimeout as exc:
            # What the broker holds and what the worker said, to tell where the task is.
            client = broker.redis.client
            keys = sorted(k.decode() for k in client.keys(f"{prefix}*"))
            held = {k: client.hgetall(k) for k in keys[:10] if k.startswith(f"{prefix}m:")}
            pytest.fail(
                f"{exc}\n{broker.stats('default')}\nkeys: {keys[:40]}\nmessages: {held}\n"
                f"worker log:\n{workers.output(worker)[-6000:]}"
            )
        chaos.join()
        assert proxy.resets > 0
        log = workers.output(worker)
        assert "lost Redis" in log and "is back" in log, "the black hole missed the run"
        assert worker.poll() is None, "the worker died"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
        starts = {line.split()[1] for line in workers.lines() if line.startswith("start")}
        assert starts == {f"t{i}" for i in range(300)}
        assert broker.depth("default") == 0 and broker.dead_letters("default") == []
    finally:
        app.close()
        broker.close()
        results.close()


@pytest.fixture
def amqp_proxy() -> Iterator[FaultyProxy]:
    require("RabbitMQ", "127.0.0.1", 5672)
    p = FaultyProxy(("127.0.0.1", 5672))
    yield p
    p.close()


def test_amqp_resets_and_a_black_hole_past_two_heartbeats(
    workers: WorkerProcesses, amqp_proxy: FaultyProxy, tmp_path: Path
) -> None:
    """With heartbeat=1, a 4 s black hole is past two heartbeats: the worker must notice the
    dead connection by itself, reconnect, and run everything."""
    from tests.support import sample_app

    queue = f"net-{uuid.uuid4().hex[:8]}"
    results = f"sqlite:///{tmp_path}/results.db"
    app: App = sample_app.app
    app.configure(f"{AMQP_URL}?queue_expires=60", results)
    try:
        url = f"amqp://guest:guest@127.0.0.1:{amqp_proxy.port}/?heartbeat=1&queue_expires=60"
        workers.use(url, results)
        handles = [
            app.tasks["sleepy"].apply_async((0.02, f"t{i}"), queue=queue) for i in range(200)
        ]
        worker = workers.start("-Q", queue, "--lease", "5", "--prefetch", "5")

        def faults() -> None:
            workers.wait_for("start", timeout=60)  # once it runs tasks, as above
            for _ in range(3):
                amqp_proxy.reset_all()
                time.sleep(0.8)
            amqp_proxy.blackhole(True)
            time.sleep(4.0)
            amqp_proxy.blackhole(False)

        chaos = threading.Thread(target=faults)
        chaos.start()
        assert [h.get(timeout=90) for h in handles] == [f"t{i}" for i in range(200)]
        chaos.join()
        assert worker.poll() is None, "the worker died"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
        log = workers.output(worker)
        assert "connection to" in log and "reconnected" in log, log
        assert app.broker.depth(queue) == 0 and app.broker.dead_letters(queue) == []
    finally:
        app.close()
