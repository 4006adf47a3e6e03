"""The Redis broker on a Redis Cluster, beyond the contract (which test_contract.py holds
against it as `redis-cluster`): keys by hash tag, queues spread over the shards, fetches
over queues of several slots, and worker processes with results on the cluster too."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from soloist import App
from soloist.brokers import from_url
from soloist.brokers.cluster import queue_tag
from soloist.brokers.redis import RedisBroker, queue_key
from soloist.brokers.redis_cluster import RedisClusterBroker
from soloist.errors import ConfigurationError
from soloist.results.redis import RedisResultStore
from tests.conftest import WorkerProcesses
from tests.support.redis_cluster_support import RedisCluster
from tests.support.waiting import wait_until


@pytest.fixture
def url(redis_cluster: RedisCluster) -> str:
    return redis_cluster.url(prefix=f"t-{uuid.uuid4().hex[:8]}:")


@pytest.fixture
def broker(url: str) -> Iterator[RedisClusterBroker]:
    b = from_url(url)
    assert isinstance(b, RedisClusterBroker)
    yield b
    b.close()


def keys_by_node(cluster: RedisCluster, prefix: str) -> dict[int, list[str]]:
    """Each node's keys under `prefix`, read from the node itself."""
    found = {}
    for port in cluster.ports:
        with redis.Redis(port=port) as node:
            found[port] = [k.decode() for k in node.scan_iter(match=prefix + "*")]
    return found


def test_cluster_urls_are_checked() -> None:
    for bad in ("redis+cluster://h1:x/", "redis+cluster://h1:7000/0", "redis+cluster://h:1/?db=2"):
        with pytest.raises(ConfigurationError):
            from_url(bad)
    with pytest.raises(ConfigurationError, match="wait_replicas"):
        from_url("redis+cluster://h1:7000/?wait_replicas=1")
    with pytest.raises(ConfigurationError, match="redis\\+cluster"):
        RedisBroker("redis+cluster://h1:7000/")  # the one-server broker would cross slots
    broker = from_url("redis+cluster://:pw@h1:7000,h2/?prefix=app:&socket_timeout=2")
    assert "pw" not in broker.redis.redacted  # type: ignore[attr-defined]
    assert broker.redis.max_block == pytest.approx(1.6)  # type: ignore[attr-defined]


def test_every_master_is_checked(tmp_path: Path, redis_cluster: RedisCluster) -> None:
    """A worker's start-up check reads each master's INFO, on a cluster of one master too."""
    one = RedisCluster(tmp_path / "one", masters=1)
    try:
        one.start()
        for cluster in (one, redis_cluster):
            broker = from_url(cluster.url(prefix=f"t-{uuid.uuid4().hex[:8]}:"))
            assert len(broker.redis.call(broker.redis._infos)) == len(cluster.ports)  # type: ignore[attr-defined]
            broker.check()
            broker.close()
    finally:
        one.stop()


def test_each_queue_lives_whole_on_one_shard_and_queues_spread(
    broker: RedisClusterBroker, redis_cluster: RedisCluster
) -> None:
    queues = [f"spread-{n}" for n in range(12)]
    for queue in queues:
        broker.publish(queue, b"x")
        broker.publish(queue, b"later", delay=60)
        (d,) = broker.fetch([queue], 1, 30, 1.0)
        broker.dead_letter(d, "to have a dead letter too")
    homes: dict[str, set[int]] = {q: set() for q in queues}
    for port, keys in keys_by_node(redis_cluster, broker.prefix).items():
        for key in keys:
            if "{q:" in key:  # not the schema stamp
                homes[key.split("{q:")[1].split("}")[0]].add(port)
    assert all(len(ports) == 1 for ports in homes.values()), homes
    assert len({port for (port,) in homes.values()}) == 3  # every shard holds some


def test_queues_with_one_hash_tag_share_a_slot(
    broker: RedisClusterBroker, redis_cluster: RedisCluster
) -> None:
    high, low = "{mail}-high", "{mail}-low"
    broker.publish(low, b"low")
    broker.publish(high, b"high")
    keys = [k for ks in keys_by_node(redis_cluster, broker.prefix + "{").values() for k in ks]
    assert len(keys) > 4 and len({key_slot(k.encode()) for k in keys}) == 1
    got = broker.fetch([high, low], 2, 30, 1.0)
    assert [(d.queue, d.body) for d in got] == [(high, b"high"), (low, b"low")]
    assert len({d.id for d in got}) == 2
    assert broker.ack_many(got) == [True, True]


def test_ids_are_unique_across_queues_and_a_batch_spans_slots(broker: RedisClusterBroker) -> None:
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    ids = broker.publish_many([(a, b"a1", 0, 0), (b, b"b1", 0, 0), (a, b"a2", 0, 0)])
    assert len(set(ids)) == 3
    got = broker.fetch([b, a], 5, 30, 1.0)
    assert [d.body for d in got] == [b"b1", b"a1", b"a2"]
    assert {d.id for d in got} == set(ids)
    assert broker.extend(got, 30) == []
    assert broker.ack_many(got) == [True] * 3
    assert broker.ack_many(got) == [False] * 3  # gone: a fresh try is too late
    assert broker.depth(a) == broker.depth(b) == 0


def test_dead_letters_are_settled_by_id_on_their_own_queue(broker: RedisClusterBroker) -> None:
    """Each queue counts its own ids: `<queue>:1` of one is not `<queue>:1` of another."""
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    for queue in (a, b):
        broker.publish(queue, queue.encode())
        (d,) = broker.fetch([queue], 1, 30, 1.0)
        assert broker.dead_letter(d, "no")
    (dead_a,), (dead_b,) = broker.dead_letters(a), broker.dead_letters(b)
    assert dead_a.id.rpartition(":")[2] == dead_b.id.rpartition(":")[2]  # same number
    assert broker.requeue_dead(a, [dead_b.id]) == 0
    assert broker.requeue_dead(b, [dead_b.id]) == 1
    assert [d.id for d in broker.dead_letters(a)] == [dead_a.id]
    assert broker.drop_dead(a, [dead_a.id]) == 1 and broker.dead_letters(a) == []


def test_a_lapsed_message_of_a_later_slot_does_not_join_a_batch(
    broker: RedisClusterBroker,
) -> None:
    first, later = f"first-{uuid.uuid4().hex[:6]}", f"later-{uuid.uuid4().hex[:6]}"
    broker.publish(later, b"lapsed")
    broker.fetch([later], 1, 0.2, 1.0)
    time.sleep(0.4)  # its lease lapses
    broker.publish(first, b"fresh")
    got = broker.fetch([first, later], 5, 30, 1.0)
    assert [d.body for d in got] == [b"fresh"]
    (alone,) = broker.fetch([later], 5, 30, 1.0)
    assert (alone.body, alone.delivery_count) == (b"lapsed", 2)  # released: not counted twice


def test_an_idle_fetch_over_several_slots_wakes_for_each(url: str) -> None:
    consumer, producer = from_url(url), from_url(url)
    queues = [f"w{n}-{uuid.uuid4().hex[:6]}" for n in range(3)]
    try:
        for queue in queues:
            timer = threading.Timer(0.3, producer.publish, (queue, queue.encode()))
            timer.start()
            t0 = time.monotonic()
            got = consumer.fetch(queues, 1, 30, 5.0)
            timer.join()
            assert [d.body for d in got] == [queue.encode()]
            assert time.monotonic() - t0 < 2.0  # not a recheck's 10 s
            assert consumer.ack(got[0])
    finally:
        consumer.close()
        producer.close()


def test_wake_tokens_stay_bounded(broker: RedisClusterBroker) -> None:
    """A Cluster's fetchers block on the queue's wake list: one token, however many
    publishes."""
    queue = f"t-{uuid.uuid4().hex[:6]}"
    broker.publish_many([(queue, b"x", 0, 0)] * 50)
    for _ in range(50):
        broker.publish(queue, b"y", delay=60)
    assert broker.redis.command("LLEN", queue_key(broker.redis, queue, "wake")) == 1


def test_a_queue_whose_slot_moves_to_another_shard_keeps_working(
    url: str, redis_cluster: RedisCluster
) -> None:
    """The clients' slot tables are stale after the move: MOVED sends them after it."""
    queue = f"moving-{uuid.uuid4().hex[:6]}"
    producer, consumer = from_url(url), from_url(url)
    try:
        producer.publish_many([(queue, b"%d" % n, 0, 0) for n in range(5)])
        held = consumer.fetch([queue], 2, 30, 1.0)
        slot = key_slot(producer.redis.key(queue_tag(queue), "").encode())  # type: ignore[attr-defined]
        before = redis_cluster.owner(slot)
        redis_cluster.move_slot(slot, next(p for p in redis_cluster.ports if p != before))
        assert consumer.ack_many(held) == [True, True]
        producer.publish(queue, b"5")
        rest = consumer.fetch([queue], 10, 30, 1.0)
        assert sorted(d.body for d in rest) == [b"2", b"3", b"4", b"5"]
        assert consumer.ack_many(rest) == [True] * 4
        assert producer.depth(queue) == 0
    finally:
        producer.close()
        consumer.close()


def test_acks_go_down_a_pipe_per_node(broker: RedisClusterBroker, url: str) -> None:
    """Acks of queues on every shard, pipelined; records are the store's to write first."""
    queues = [f"spread-{n}" for n in range(6)]  # on all three shards
    broker.publish_many([(q, q.encode(), 0, 0) for q in queues])
    got = broker.fetch(queues, 6, 30, 1.0)
    assert len(got) == 6
    pipe = broker.ack_pipe(RedisResultStore(url))
    assert pipe is not None and not pipe.records
    with pytest.raises(ValueError):
        pipe.send(got[0], ("task", "SUCCESS", b"body"), 60)  # a record cannot ride along
    pipe.collect()
    for d in got:
        pipe.send(d, None, 60)
    assert pipe.pending == 6
    assert len(pipe._links) == 3  # type: ignore[attr-defined]
    assert pipe.collect() == [True] * 6
    assert all(broker.depth(q) == 0 for q in queues)
    assert broker.ack_many(got) == [False] * 6  # settled for good
    pipe.close()


def test_a_pipelined_ack_whose_slot_moved_is_made_again(
    broker: RedisClusterBroker, redis_cluster: RedisCluster
) -> None:
    queue = f"moving-{uuid.uuid4().hex[:6]}"
    broker.publish_many([(queue, b"x", 0, 0)] * 2)
    first, second = broker.fetch([queue], 2, 30, 1.0)
    pipe = broker.ack_pipe(None)
    assert pipe is not None
    pipe.send(first, None, 60)  # the link to the slot's node is open now
    assert pipe.collect() == [True]
    slot = key_slot(broker.redis.key(queue_tag(queue), "").encode())
    before = redis_cluster.owner(slot)
    redis_cluster.move_slot(slot, next(p for p in redis_cluster.ports if p != before))
    pipe.send(second, None, 60)  # down the old node's link: MOVED
    assert pipe.collect() == [True]
    assert broker.depth(queue) == 0 and broker.ack_many([second]) == [False]
    pipe.close()


def test_the_worker_registry(broker: RedisClusterBroker) -> None:
    broker.heartbeat("w1", b"info", 30)
    assert broker.workers()["w1"][0] == b"info"
    broker.forget_worker("w1")
    assert "w1" not in broker.workers()


def test_revocations_log_on_their_own_slot(url: str) -> None:
    store = RedisResultStore(url)
    try:
        ids = [uuid.uuid4().hex for _ in range(5)]
        for task_id in ids:
            assert store.revoke(task_id, b"revoked", 60, terminate=task_id == ids[0])
        logged = store.revoked_since(0)
        assert [r.task_id for r in logged] == ids
        assert [r.terminate for r in logged] == [True, False, False, False, False]
        assert store.revocation_mark() == b"5"
    finally:
        store.close()


#: Six queues, which their names spread over the shards.
QUEUES = [f"spread-{n}" for n in range(6)]


def spread(app: App, tasks: range) -> list[str]:
    """Send add(a, 1) for each `a` of `tasks`, round the QUEUES; their ids."""
    return [app.send_task("add", (a, 1), queue=QUEUES[a % 6]).id for a in tasks]


def spread_fleet(
    url: str, workers: WorkerProcesses, app: App, procs: int, tasks: range
) -> tuple[list[subprocess.Popen[str]], list[str]]:
    """`procs` worker processes on the cluster at `url` (results there too), each taking
    the QUEUES from another one first; then `tasks` sent (`spread`), the first one run."""
    workers.use(url)
    app.configure(url, url)
    started = [workers.start("-Q", ",".join(QUEUES[n:] + QUEUES[:n])) for n in range(procs)]
    sent = spread(app, tasks)
    assert app.result(sent[0]).get(timeout=30) == 1
    return started, sent


@pytest.mark.slow
def test_workers_run_tasks_of_queues_on_every_shard(
    url: str, workers: WorkerProcesses, sample_app: App
) -> None:
    """Worker processes on the cluster, results on it too, a worker SIGKILLed mid-run."""
    procs, sent = spread_fleet(url, workers, sample_app, 3, range(120))
    procs[0].kill()  # its leased task runs again elsewhere once the lease lapses
    got = [sample_app.result(task_id).get(timeout=90) for task_id in sent]
    assert got == [a + 1 for a in range(120)]
    assert all(p.poll() is None for p in procs[1:])
    wait_until(lambda: all(sample_app.broker.depth(q) == 0 for q in QUEUES), 30, "empty queues")


@pytest.mark.slow
def test_workers_and_producer_follow_a_shard_failover(
    tmp_path: Path, workers: WorkerProcesses, sample_app: App
) -> None:
    """3 masters with a replica each: a master SIGKILLed mid-run, its replica promoted;
    the producer and the workers find the new slot owner without a restart."""
    cluster = RedisCluster(tmp_path / "cluster", replicas=1)
    try:
        cluster.start()
        url = cluster.url(prefix="failover:")
        procs, _ = spread_fleet(url, workers, sample_app, 2, range(60))
        # Both running: a worker's first call is not retried (a wrong URL fails at once).
        wait_until(lambda: len(sample_app.broker.workers()) == 2, 30, "both workers' beats")
        slot = key_slot(sample_app.broker.redis.key("q:spread-0", "").encode())  # type: ignore[attr-defined]
        victim = cluster.owner(slot)
        next(s for s in cluster.servers if s.port == victim).stop(signal.SIGKILL)
        wait_until(lambda: cluster.owner(slot) != victim, 30, "the replica's promotion")
        later = spread(sample_app, range(60, 90))
        # Replication is asynchronous: a write the master acknowledged in its last instant
        # may be gone. What was sent after the promotion must all run.
        assert [sample_app.result(t).get(timeout=60) for t in later] == [
            a + 1 for a in range(60, 90)
        ]
        assert all(p.poll() is None for p in procs), [workers.output(p) for p in procs]
    finally:
        sample_app.close()
        cluster.stop()
