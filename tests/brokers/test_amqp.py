"""RabbitMQ-specific behaviour beyond the contract suite: heartbeats during long inline tasks,
consumer_timeout, a server restart mid-run, URLs and errors.

Tests that change the server (restart it, tune its consumer timeout) need `rabbitmqctl`
and always put the server back in a `finally`.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pika
import pika.exceptions as pe
import pytest

from soloist import App
from soloist.brokers.amqp import AMQPBroker, _bucket_ms
from soloist.errors import BrokerUnavailable, ConfigurationError
from soloist.worker.loop import Worker
from tests.amqp_support import DeletingAMQPBroker, amqp_url
from tests.servers import AMQP_URL, require

HEARTBEAT = 2  # seconds; RabbitMQ closes a connection after two missed intervals
BLOCK = 20.0  # how long the "task" keeps the main thread


@pytest.fixture(autouse=True)
def _rabbitmq() -> None:
    require("RabbitMQ", "127.0.0.1", 5672)


@pytest.fixture
def queue() -> str:
    return f"test-amqp-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def brokers() -> Iterator[list[AMQPBroker]]:
    """Brokers made by a test, closed (and their queues deleted) afterwards."""
    made: list[AMQPBroker] = []
    yield made
    for broker in made:
        broker.close()


def make(brokers: list[AMQPBroker], **options: object) -> DeletingAMQPBroker:
    broker = DeletingAMQPBroker(amqp_url(**options))
    brokers.append(broker)
    return broker


def rabbitmqctl(*args: str) -> str:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not available")
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_delays_round_up_to_two_significant_digits() -> None:
    assert [_bucket_ms(s) for s in (0.0001, 0.037, 0.6, 1.234, 3661)] == [
        1,
        37,
        600,
        1300,
        3_700_000,
    ]


def test_bad_url_and_unreachable_server_never_show_the_password() -> None:
    with pytest.raises(ConfigurationError):
        AMQPBroker("amqp://guest:guest@127.0.0.1:5672/?max_priority=lots")
    with pytest.raises(ConfigurationError):
        AMQPBroker("amqp://guest:guest@127.0.0.1:5672/?no_such_option=1")
    broker = AMQPBroker("amqp://guest:s3cr3t-pw@127.0.0.1:5672/")
    with pytest.raises(BrokerUnavailable) as info:
        broker.publish("q", b"x")
    assert "s3cr3t-pw" not in str(info.value) and "***" in str(info.value)
    broker.close()


@pytest.mark.slow
def test_heartbeats_flow_while_the_main_thread_blocks(
    brokers: list[AMQPBroker], queue: str
) -> None:
    """The Celery solo-pool failure, done right: fetch, block the main thread for ten
    heartbeat timeouts, then the ack succeeds on the same channel and nothing comes back."""
    broker = make(brokers, heartbeat=HEARTBEAT)
    broker.publish(queue, b"long task")
    (d,) = broker.fetch([queue], 1, 30, 5)
    lost: list[object] = []
    halt = threading.Event()

    def keeper() -> None:  # what the worker's keeper does: renew leases now and then
        while not halt.wait(1.0):
            lost.extend(broker.extend([d], 30))

    thread = threading.Thread(target=keeper)
    thread.start()
    time.sleep(BLOCK)  # the inline task (a C call that releases the GIL)
    halt.set()
    thread.join()
    assert lost == []
    # The receipt names the channel that delivered it; an ack on any other is refused.
    assert broker.ack(d), "the ack must succeed on the connection that fetched it"
    broker.die()  # had the ack not landed, the message would come back now
    assert broker.fetch([queue], 1, 30, 1.0) == []
    assert broker.depth(queue) == 0


@pytest.mark.slow
def test_control_a_connection_nobody_services_is_closed_and_the_task_runs_again(
    brokers: list[AMQPBroker], queue: str
) -> None:
    """The same steps with a bare pika connection driven from the blocked thread (as
    Celery's solo pool does): RabbitMQ closes it, the ack fails, the message returns."""
    broker = make(brokers)
    broker.publish(queue, b"long task")
    params = pika.URLParameters(f"{AMQP_URL}?heartbeat={HEARTBEAT}")
    conn = pika.BlockingConnection(params)
    channel = conn.channel()
    method, _, _ = channel.basic_get(queue)
    assert method is not None
    time.sleep(BLOCK / 2)  # five heartbeat timeouts is plenty
    with pytest.raises((pe.AMQPConnectionError, pe.AMQPChannelError)):
        channel.basic_ack(method.delivery_tag)
    (again,) = broker.fetch([queue], 1, 30, 5)
    assert again.body == b"long task" and again.delivery_count == 2
    assert broker.ack(again)


@pytest.mark.slow
def test_a_solo_worker_runs_a_long_task_once(brokers: list[AMQPBroker], queue: str) -> None:
    """End to end with the real worker: 10 s in a C call, 10 s of pure Python."""
    broker = make(brokers, heartbeat=HEARTBEAT)
    app = App(broker, "memory://", default_queue=queue)
    runs: list[float] = []

    @app.task
    def long_task() -> str:
        runs.append(time.time())
        time.sleep(BLOCK / 2)
        until = time.monotonic() + BLOCK / 2
        n = 0
        while time.monotonic() < until:  # holds the GIL, but only for a switch interval
            n += 1
        return "done"

    result = long_task.delay()
    worker = Worker(app, [queue], burst=True, watchdog=False)
    assert worker.run() == 0
    assert len(runs) == 1
    assert (worker.stats.done, worker.stats.stale) == (1, 0)
    assert result.get(timeout=1) == "done"
    broker.die()
    assert broker.fetch([queue], 1, 30, 1.0) == [] and broker.depth(queue) == 0


@pytest.mark.slow
def test_consumer_timeout_closes_the_channel_and_the_task_comes_back(
    brokers: list[AMQPBroker], queue: str
) -> None:
    """RabbitMQ closes a channel that holds a delivery past consumer_timeout. The holder's
    settles are refused, the message is delivered again, and the broker carries on.

    The server reads consumer_timeout when a channel opens, so it is lowered only while
    this broker connects; the check runs on the channel tick, shortened meanwhile."""
    rabbitmqctl("eval", "application:set_env(rabbit, channel_tick_interval, 500).")
    try:
        rabbitmqctl("eval", "application:set_env(rabbit, consumer_timeout, 2000).")
        try:
            holder = make(brokers)
            holder.publish(queue, b"slow")  # connects: its channels get the 2 s timeout
        finally:
            rabbitmqctl("eval", "application:set_env(rabbit, consumer_timeout, 1800000).")
        (d,) = holder.fetch([queue], 1, 30, 5)
        deadline = time.monotonic() + 15
        while holder.extend([d], 30) == [] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert holder.extend([d], 30) == [d], "the keeper learns the lease is gone"
        assert not holder.ack(d)
        (again,) = holder.fetch([queue], 1, 30, 5)  # the same broker, on a fresh channel
        assert again.body == b"slow" and again.delivery_count == 2
        assert holder.ack(again)
    finally:
        rabbitmqctl("eval", "application:set_env(rabbit, channel_tick_interval, 60000).")


@pytest.mark.slow
def test_server_restart_mid_run_loses_no_confirmed_message(
    brokers: list[AMQPBroker], queue: str
) -> None:
    """stop_app / start_app while a producer and two consumers run: everyone reconnects,
    every confirmed publish is consumed; duplicates only from deliveries in flight."""
    total = 3000
    producer = make(brokers)
    consumers = [make(brokers) for _ in range(2)]
    producer.publish(queue, b"warm-up")  # declares the queue before consumers start
    confirmed: list[bytes] = []
    seen: list[bytes] = []
    lock = threading.Lock()
    done = threading.Event()

    def produce() -> None:
        for i in range(total):
            body = b"%d" % i
            producer.publish(queue, body)  # returns only once confirmed
            confirmed.append(body)

    def consume(broker: AMQPBroker) -> None:
        while not done.is_set():
            for d in broker.fetch([queue], 10, 30, 0.5):
                with lock:
                    seen.append(d.body)
                broker.ack(d)  # a refused ack: the message comes back and is seen again

    threads = [threading.Thread(target=produce)]
    threads += [threading.Thread(target=consume, args=(c,)) for c in consumers]
    for t in threads:
        t.start()
    try:
        while len(confirmed) < total // 3:
            time.sleep(0.05)
        rabbitmqctl("stop_app")
        time.sleep(2)
    finally:
        rabbitmqctl("start_app")
    threads[0].join(timeout=60)
    assert len(confirmed) == total
    wanted = {b"warm-up", *confirmed}
    deadline = time.monotonic() + 40
    while not wanted <= set(seen) and time.monotonic() < deadline:
        time.sleep(0.2)
    done.set()
    for t in threads[1:]:
        t.join()
    missing = wanted - set(seen)
    assert not missing, f"{len(missing)} confirmed messages lost"
    assert producer.depth(queue) == 0
