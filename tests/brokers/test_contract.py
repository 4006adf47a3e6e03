"""The broker contract (soloist/brokers/base.py), held against every broker in BROKERS."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from soloist.brokers.base import Broker, Delivery

LEASE = 0.5
HolderDies = Callable[[Broker, float], None]


def fetch_one(broker: Broker, queue: str, lease: float = LEASE, timeout: float = 2.0) -> Delivery:
    got = broker.fetch([queue], 1, lease, timeout)
    assert len(got) == 1, f"expected one delivery from {queue}, got {got}"
    return got[0]


def test_publish_then_fetch_gives_the_body_once(broker: Broker, queue: str) -> None:
    broker.publish(queue, b"hello")
    d = fetch_one(broker, queue)
    assert (d.body, d.queue, d.delivery_count, d.retries) == (b"hello", queue, 1, 0)
    assert broker.fetch([queue], 1, LEASE, 0.1) == []


def test_fetch_waits_then_returns_empty(broker: Broker, queue: str) -> None:
    t0 = time.monotonic()
    assert broker.fetch([queue], 5, LEASE, 0.3) == []
    assert time.monotonic() - t0 >= 0.25


def test_leased_message_is_invisible_to_another_consumer(
    make_broker: Callable[..., Broker], queue: str
) -> None:
    a, b = make_broker(), make_broker()
    a.publish(queue, b"x")
    fetch_one(a, queue, lease=5)
    assert b.fetch([queue], 1, 5, 0.3) == []


def test_ack_removes_for_good(broker: Broker, queue: str, holder_dies: HolderDies) -> None:
    broker.publish(queue, b"x")
    assert broker.ack(fetch_one(broker, queue))
    holder_dies(broker, LEASE)
    assert broker.fetch([queue], 1, LEASE, 0.1) == []
    assert broker.depth(queue) == 0


def test_publish_many_keeps_order_delay_and_priority(broker: Broker, queue: str) -> None:
    ids = broker.publish_many(
        [(queue, b"a", 0, 0), (queue, b"b", 0, 0), (queue, b"later", 60, 0), (queue, b"c", 0, 1)]
    )
    assert len(set(ids)) == 4
    got = broker.fetch([queue], 10, LEASE, 2.0)
    assert [d.body for d in got] == [b"c", b"a", b"b"]
    assert broker.depth(queue) == 1  # the delayed one


def test_ack_many_acks_each_and_fences_stale_holders(
    make_broker: Callable[..., Broker], queue: str, holder_dies: HolderDies
) -> None:
    a, b = make_broker(), make_broker()
    a.publish_many([(queue, body, 0, 0) for body in (b"x", b"y", b"z")])
    stale = fetch_one(a, queue)
    holder_dies(a, LEASE)
    taken: list[Delivery] = []
    while len(taken) < 3:  # "up to max_count": a broker may hand them out in parts
        got = b.fetch([queue], 3 - len(taken), 5, 2.0)
        assert got
        taken += got
    assert sorted(d.body for d in taken) == [b"x", b"y", b"z"]
    assert a.ack_many([stale]) == [False]
    assert b.ack_many(taken) == [True, True, True]
    assert b.ack_many([]) == []
    assert b.fetch([queue], 1, LEASE, 0.1) == []
    assert b.depth(queue) == 0


def test_lapsed_lease_redelivers_with_count_raised_and_fences_the_old_holder(
    make_broker: Callable[..., Broker], queue: str, holder_dies: HolderDies
) -> None:
    a, b = make_broker(), make_broker()
    a.publish(queue, b"x")
    first = fetch_one(a, queue)
    holder_dies(a, LEASE)
    second = fetch_one(b, queue, lease=5)
    assert second.body == b"x" and second.delivery_count == 2
    assert not a.ack(first), "a stale holder's ack must be refused"
    assert not a.retry(first, 0) and not a.dead_letter(first, "stale")
    assert b.ack(second)


def test_retry_delays_and_raises_retries(broker: Broker, queue: str) -> None:
    broker.publish(queue, b"x")
    assert broker.retry(fetch_one(broker, queue), delay=0.6)
    assert broker.fetch([queue], 1, LEASE, 0.2) == []
    assert broker.depth(queue) == 1  # waiting, delayed
    again = fetch_one(broker, queue, timeout=3)
    assert (again.retries, again.delivery_count) == (1, 1)


def test_a_deferral_delays_without_counting_a_retry(broker: Broker, queue: str) -> None:
    broker.publish(queue, b"x")
    assert broker.retry(fetch_one(broker, queue), delay=0)
    retried = fetch_one(broker, queue, timeout=3)
    assert broker.retry(retried, delay=0.6, counted=False)  # a task held back by a limit
    assert broker.fetch([queue], 1, LEASE, 0.2) == []
    again = fetch_one(broker, queue, timeout=3)
    assert (again.retries, again.delivery_count) == (1, 1)


def test_publish_with_delay(broker: Broker, queue: str) -> None:
    broker.publish(queue, b"later", delay=0.6)
    broker.publish(queue, b"now")
    now = fetch_one(broker, queue)
    assert now.body == b"now" and broker.ack(now)
    assert broker.fetch([queue], 1, LEASE, 0.2) == []
    t0 = time.monotonic()
    assert fetch_one(broker, queue, timeout=3).body == b"later"
    assert time.monotonic() - t0 < 2.5


def test_priority_then_age(broker: Broker, queue: str) -> None:
    for body, priority in [(b"low1", 0), (b"high", 5), (b"low2", 0), (b"mid", 1)]:
        broker.publish(queue, body, priority=priority)
    got = [fetch_one(broker, queue).body for _ in range(4)]
    assert got == [b"high", b"mid", b"low1", b"low2"]


def test_queues_are_served_in_the_order_given(broker: Broker, queue: str) -> None:
    urgent = queue + "-urgent"
    broker.publish(queue, b"normal")
    broker.publish(urgent, b"urgent")
    assert fetch_one_of(broker, [urgent, queue]).body == b"urgent"
    assert fetch_one_of(broker, [urgent, queue]).body == b"normal"


def fetch_one_of(broker: Broker, queues: list[str]) -> Delivery:
    got = broker.fetch(queues, 1, LEASE, 2.0)
    assert len(got) == 1
    return got[0]


def test_fetch_batches_up_to_max_count(broker: Broker, queue: str) -> None:
    for i in range(7):
        broker.publish(queue, b"%d" % i)
    first = broker.fetch([queue], 5, 5, 1.0)
    assert [d.body for d in first] == [b"0", b"1", b"2", b"3", b"4"]
    rest = broker.fetch([queue], 5, 5, 1.0)
    assert sorted(d.body for d in rest) == [b"5", b"6"]


def test_extend_keeps_the_lease(make_broker: Callable[..., Broker], queue: str) -> None:
    a, b = make_broker(), make_broker()
    a.publish(queue, b"x")
    d = fetch_one(a, queue)
    for _ in range(3):
        time.sleep(LEASE / 2)
        assert a.extend([d], LEASE) == []
    assert b.fetch([queue], 1, LEASE, 0.1) == []
    assert a.ack(d)


def test_extend_reports_lost_leases(
    make_broker: Callable[..., Broker], queue: str, holder_dies: HolderDies
) -> None:
    a, b = make_broker(), make_broker()
    a.publish(queue, b"x")
    d = fetch_one(a, queue)
    holder_dies(a, LEASE)
    fetch_one(b, queue, lease=5)
    assert a.extend([d], LEASE) == [d]


def test_release_gives_back_at_once_without_counting(broker: Broker, queue: str) -> None:
    broker.publish(queue, b"x")
    d = fetch_one(broker, queue, lease=30)
    broker.release([d])
    again = fetch_one(broker, queue, timeout=0.5)
    assert again.body == b"x" and again.delivery_count == 1


def test_give_back_after_a_lost_execution(make_broker: Callable[..., Broker], queue: str) -> None:
    """`abandon`: the run was lost (a pool child died), so the message is out again at
    once, its count raised, the old holder fenced; past max_deliveries it is poison."""
    a, b = make_broker(max_deliveries=2), make_broker(max_deliveries=2)
    a.publish(queue, b"x")
    first = fetch_one(a, queue, lease=60)
    a.abandon([first])
    second = fetch_one(b, queue, lease=60, timeout=2)
    assert second.body == b"x" and second.delivery_count == 2
    assert not a.ack(first), "the lost run's holder is fenced"
    b.abandon([second])
    assert b.fetch([queue], 1, 60, 0.5) == []
    (dead,) = b.dead_letters(queue)
    assert dead.body == b"x" and "2 times" in dead.reason


def test_dead_letter_list_requeue_drop(broker: Broker, queue: str) -> None:
    broker.publish(queue, b"bad")
    broker.publish(queue, b"worse")
    assert broker.dead_letter(fetch_one(broker, queue), "no good")
    assert broker.dead_letter(fetch_one(broker, queue), "even worse")
    dead = broker.dead_letters(queue)
    assert [(d.body, d.reason) for d in dead] == [(b"bad", "no good"), (b"worse", "even worse")]
    assert broker.depth(queue) == 0
    assert broker.requeue_dead(queue, [dead[0].id]) == 1
    again = fetch_one(broker, queue)
    assert (again.body, again.delivery_count, again.retries) == (b"bad", 1, 0)
    assert broker.drop_dead(queue) == 1
    assert broker.dead_letters(queue) == []


def test_poison_message_is_dead_lettered_after_max_deliveries(
    make_broker: Callable[..., Broker], queue: str, holder_dies: HolderDies
) -> None:
    broker = make_broker(max_deliveries=2)
    broker.publish(queue, b"poison")
    for count in (1, 2):
        assert fetch_one(broker, queue, lease=0.2).delivery_count == count
        holder_dies(broker, 0.2)  # the "worker" died
    assert broker.fetch([queue], 1, 0.2, 0.5) == []
    (dead,) = broker.dead_letters(queue)
    assert dead.body == b"poison" and "2 times" in dead.reason


def test_depth_and_purge(broker: Broker, queue: str) -> None:
    for _ in range(3):
        broker.publish(queue, b"x")
    broker.publish(queue, b"later", delay=60)
    assert broker.depth(queue) == 4
    held = fetch_one(broker, queue, lease=30)
    assert broker.depth(queue) == 3
    assert broker.purge(queue) == 3
    assert broker.depth(queue) == 0
    assert broker.ack(held)


def test_ping_reaches_the_server_and_changes_nothing(broker: Broker, queue: str) -> None:
    broker.publish(queue, b"x")
    assert broker.ping() is None
    assert broker.depth(queue) == 1 and fetch_one(broker, queue).body == b"x"


def test_idle_fetch_wakes_for_a_new_message(make_broker: Callable[..., Broker], queue: str) -> None:
    consumer, producer = make_broker(), make_broker()
    timer = threading.Timer(0.3, producer.publish, (queue, b"wake"))
    timer.start()
    t0 = time.monotonic()
    got = consumer.fetch([queue], 1, LEASE, 5.0)
    timer.join()
    assert [d.body for d in got] == [b"wake"]
    assert time.monotonic() - t0 < 2.0


def test_concurrent_consumers_never_share_a_message(
    make_broker: Callable[..., Broker], queue: str
) -> None:
    producer = make_broker()
    for i in range(200):
        producer.publish(queue, b"%d" % i)
    consumers = [make_broker() for _ in range(4)]
    seen: list[bytes] = []
    lock = threading.Lock()

    def consume(broker: Broker) -> None:
        while got := broker.fetch([queue], 3, 30, 0.5):
            for d in got:
                with lock:
                    seen.append(d.body)
                assert broker.ack(d)

    threads = [threading.Thread(target=consume, args=(c,)) for c in consumers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == sorted(b"%d" % i for i in range(200))


def test_heartbeats(broker: Broker) -> None:
    broker.heartbeat("w1", b'{"pid": 1}', ttl=30)
    broker.heartbeat("w2", b"{}", ttl=0.2)
    time.sleep(0.4)
    workers = broker.workers()
    assert workers["w1"][0] == b'{"pid": 1}' and "w2" not in workers
    broker.forget_worker("w1")
    assert "w1" not in broker.workers()


def test_stats_count_waiting_delayed_in_flight_and_dead(broker: Broker, queue: str) -> None:
    for body in (b"a", b"b", b"c"):
        broker.publish(queue, body)
    broker.publish(queue, b"later", delay=60)
    held = fetch_one(broker, queue, lease=30)
    assert broker.dead_letter(fetch_one(broker, queue, lease=30), "bad")
    stats = broker.stats(queue)
    assert stats.depth == broker.depth(queue) == 2
    # Brokers that cannot count cheaply say None (the default built from depth()).
    assert stats.delayed in (1, None)
    assert stats.in_flight in (1, None)
    assert stats.dead in (1, None)
    assert broker.ack(held)


def test_concurrent_requeues_move_each_dead_letter_once(
    make_broker: Callable[..., Broker], queue: str
) -> None:
    """Two operators requeue the same dead letters at once: each is requeued exactly once."""
    first = make_broker()
    for i in range(20):
        first.publish(queue, b"%d" % i)
    for d in first.fetch([queue], 20, 30, 2.0):
        assert first.dead_letter(d, "bad")
    ids = [d.id for d in first.dead_letters(queue)]
    assert len(ids) == 20
    operators = [make_broker(), make_broker()]
    moved: list[int] = []
    barrier = threading.Barrier(2)

    def requeue(broker: Broker) -> None:
        barrier.wait()
        moved.extend(broker.requeue_dead(queue, [i]) for i in ids)

    threads = [threading.Thread(target=requeue, args=(b,)) for b in operators]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(moved) == 20
    assert broker_bodies(first, queue) == sorted(b"%d" % i for i in range(20))
    assert first.dead_letters(queue) == []


def broker_bodies(broker: Broker, queue: str) -> list[bytes]:
    bodies = []
    while got := broker.fetch([queue], 10, 30, 0.5):
        bodies += [d.body for d in got]
        for d in got:
            broker.ack(d)
    return sorted(bodies)


def test_a_message_back_from_a_lapsed_lease_goes_out_alone(
    make_broker: Callable[..., Broker],
    queue: str,
    holder_dies: Callable[[Broker, float], None],
    request: pytest.FixtureRequest,
) -> None:
    """Messages prefetched beside one that killed its worker are not counted as poison."""
    if request.node.callspec.params["make_broker"] == "amqp":
        pytest.skip("RabbitMQ itself redelivers a dead channel's unacked messages, counted")
    first, second = make_broker(max_deliveries=2), make_broker(max_deliveries=2)
    for body in (b"poison", b"a", b"b"):
        first.publish(queue, body)
    assert len(first.fetch([queue], 3, LEASE, 2.0)) == 3
    holder_dies(first, LEASE)
    (again,) = second.fetch([queue], 3, LEASE, 2.0)  # alone, though three are due
    assert (again.body, again.delivery_count) == (b"poison", 2)
    holder_dies(second, LEASE)  # it killed this worker too: now it is dead-lettered
    for body in (b"a", b"b"):
        (bystander,) = second.fetch([queue], 3, LEASE, 2.0)
        assert (bystander.body, bystander.delivery_count) == (body, 2)
        assert second.ack(bystander)
    assert [d.body for d in second.dead_letters(queue)] == [b"poison"]
