"""Store outages are not the task's fault: a worker holds its leases, backs off, and carries
on when the store is back, for as long as it runs, counting nothing against a task.

Each test runs a real worker process against a private redis-server (or a SQLite file) and
breaks that server: stopped for longer than the reconnect window, filled to `maxmemory`,
locked past the busy timeout.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from soloist import App
from soloist.errors import BrokerUnavailable
from tests.conftest import WorkerProcesses
from tests.support import sample_app as sample
from tests.support.redis_support import RedisServer, prefixed_url
from tests.support.waiting import wait_until


def logged(workers: WorkerProcesses, proc: subprocess.Popen[str], text: str) -> None:
    """Wait until the worker's output shows `text`."""
    wait_until(lambda: text in workers.output(proc), 20, f"{text!r} in the worker's output")


@pytest.fixture
def producer() -> Iterator[App]:
    yield sample.app
    sample.app.close()


def private_redis(tmp_path: Path, *options: str) -> RedisServer:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", *options)
    server.start()
    return server


def point_at(
    server: RedisServer, workers: WorkerProcesses, producer: App, **options: object
) -> None:
    """Points the workers and the producer at `server`, under a key prefix of the test's
    own (URL `options` added)."""
    url = prefixed_url(f"t-{uuid.uuid4().hex[:8]}:", server.url, **options)
    workers.use(url)
    producer.configure(url, url)


def runs_of(workers: WorkerProcesses, tag: str) -> list[str]:
    """The delivery counts with which the sleepy task `tag` started."""
    return [line.split()[-1] for line in workers.lines() if line.startswith(f"start {tag} ")]


def test_a_worker_rides_out_an_outage_longer_than_its_reconnect_window(
    tmp_path: Path, workers: WorkerProcesses, producer: App
) -> None:
    server = private_redis(tmp_path)
    try:
        point_at(server, workers, producer, reconnect_timeout=1)
        proc = workers.start()
        assert sample.add.delay(1, 2).get(timeout=20) == 3
        result = sample.sleepy.delay(1.0, "a")
        workers.wait_for("start a")
        server.stop()  # the task ends while Redis is down: its result cannot be stored
        logged(workers, proc, "unavailable, holding on")
        workers.wait_for("end a")
        with pytest.raises(BrokerUnavailable, match="unreachable for 1s"):
            sample.add.delay(2, 2)  # the producer keeps its bounded wait
        time.sleep(1.5)  # down for well past the reconnect window (1 s)
        assert proc.poll() is None, workers.output(proc)
        server.start()
        assert result.get(timeout=30) == "a"
        assert sample.add.delay(2, 3).get(timeout=30) == 5
        assert proc.poll() is None
        assert runs_of(workers, "a") == ["1"], "the lease was kept: no second delivery"
        out = workers.output(proc)
        assert out.count("unavailable, holding on") == 1, out
        assert "reachable again" in out
    finally:
        server.stop()


def fill(client: redis.Redis) -> None:
    """Put Redis past its maxmemory (noeviction): every write that grows data is refused."""
    client.config_set("maxmemory", 1)


def free(client: redis.Redis) -> None:
    client.config_set("maxmemory", 0)


def test_redis_at_maxmemory_holds_tasks_instead_of_making_them_poison(
    tmp_path: Path, workers: WorkerProcesses, producer: App
) -> None:
    """A result write refused at maxmemory is an outage: the worker keeps the lease, claims
    nothing new (the claim script is refused whole), and finishes once memory is freed."""
    server = private_redis(tmp_path, "--maxmemory-policy", "noeviction")
    client = redis.Redis.from_url(server.url)
    try:
        point_at(server, workers, producer)
        proc = workers.start()
        running = sample.sleepy.delay(2.0, "a")
        workers.wait_for("start a")
        fill(client)
        with pytest.raises(BrokerUnavailable, match="maxmemory"):
            sample.sleepy.delay(0, "b")  # refused whole, and the producer is told
        logged(workers, proc, "unavailable, holding on")
        workers.wait_for("end a")
        time.sleep(1)  # the worker keeps trying; nothing may be claimed or dead-lettered
        assert proc.poll() is None, workers.output(proc)
        free(client)
        assert running.get(timeout=30) == "a"
        assert sample.sleepy.delay(0, "c").get(timeout=30) == "c"
        assert runs_of(workers, "a") == ["1"]
        assert producer.broker.stats("default").dead == 0
    finally:
        client.close()
        server.stop()


def test_a_claim_at_maxmemory_is_refused_before_any_task_starts(
    tmp_path: Path, workers: WorkerProcesses, producer: App
) -> None:
    server = private_redis(tmp_path, "--maxmemory-policy", "noeviction")
    client = redis.Redis.from_url(server.url)
    try:
        point_at(server, workers, producer)
        results = [sample.sleepy.delay(0, f"t{n}") for n in range(3)]
        fill(client)
        proc = workers.start()
        logged(workers, proc, "unavailable, holding on")
        assert "maxmemory" in workers.output(proc)
        assert not workers.lines(), "no task may start while results cannot be stored"
        free(client)
        assert [r.get(timeout=30) for r in results] == ["t0", "t1", "t2"]
        assert all(runs_of(workers, f"t{n}") == ["1"] for n in range(3))
        assert proc.poll() is None
    finally:
        client.close()
        server.stop()


def test_a_worker_refuses_a_redis_that_evicts_messages(
    tmp_path: Path, workers: WorkerProcesses
) -> None:
    server = private_redis(tmp_path, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
    try:
        workers.use(prefixed_url(f"t-{uuid.uuid4().hex[:8]}:", server.url))
        done = workers.run("worker", "-A", "tests.support.sample_app:app", "--burst")
        assert done.returncode == 1
        assert "allkeys-lru" in done.stderr and "noeviction" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    finally:
        server.stop()


def test_messages_whose_body_is_gone_are_counted(tmp_path: Path) -> None:
    """What an eviction (or a stray DEL) leaves: ids without their message. A claim skips
    them and counts them, so operators see the loss in `stats` instead of nothing."""
    from soloist.brokers.redis import RedisBroker

    server = private_redis(tmp_path)
    try:
        broker = RedisBroker(prefixed_url("t:", server.url))
        ids = [broker.publish("q", f"m{n}".encode()) for n in range(3)]
        broker.redis.command("DEL", f"t:m:{ids[1]}")
        got = broker.fetch(["q"], 10, 30, 1.0)
        assert [d.body for d in got] == [b"m0", b"m2"]
        assert broker.stats("q").lost == 1
        broker.close()
    finally:
        server.stop()


def test_sqlite_locked_past_the_busy_timeout_is_an_outage_not_a_crash(
    tmp_path: Path, workers: WorkerProcesses, producer: App
) -> None:
    url = f"sqlite:///{tmp_path}/locked.db?busy_timeout=0.3"
    workers.use(url)
    producer.configure(url, url)
    proc = workers.start()
    assert sample.add.delay(1, 2).get(timeout=20) == 3
    running = sample.sleepy.delay(1.0, "a")
    workers.wait_for("start a")
    blocker = sqlite3.connect(f"{tmp_path}/locked.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # every other connection waits, then gives up
    try:
        logged(workers, proc, "database is locked")
        with pytest.raises(BrokerUnavailable, match="database is locked"):
            sample.add.delay(2, 2)
        time.sleep(1)
        assert proc.poll() is None, workers.output(proc)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert running.get(timeout=30) == "a"
    assert sample.add.delay(2, 3).get(timeout=30) == 5
    assert runs_of(workers, "a") == ["1"]
    assert proc.poll() is None


def test_a_worker_stopped_while_its_broker_is_down_says_so_last(
    tmp_path: Path, workers: WorkerProcesses, producer: App
) -> None:
    server = private_redis(tmp_path)
    try:
        point_at(server, workers, producer, reconnect_timeout=1)
        proc = workers.start()
        sample.sleepy.delay(0.5, "a")
        workers.wait_for("start a")
        server.stop()
        logged(workers, proc, "unavailable, holding on")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 6  # EXIT_UNAVAILABLE
        last = workers.output(proc).strip().splitlines()[-1]
        assert "stopped" in last and "stayed unavailable" in last and "1 held" in last
    finally:
        server.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs of the test's own (needs root; skipped where mounting is not allowed),
    unmounted after."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_sqlite_on_a_full_disk_is_an_outage_not_a_crash(
    small_disk: Path, workers: WorkerProcesses, producer: App
) -> None:
    url = f"sqlite:///{small_disk}/soloist.db"
    workers.use(url)
    producer.configure(url, url)
    proc = workers.start()
    big = "x" * 400_000  # its result must grow the files: the space freed by checkpoints is less
    running = sample.sleepy.delay(1.0, big)
    workers.wait_for("start ")
    filler = small_disk / "filler"
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    except OSError:
        pass  # the disk is full (closing the file may say so too: the rest of its buffer)
    try:
        logged(workers, proc, "database or disk is full")
        time.sleep(1)
        assert proc.poll() is None, workers.output(proc)
    finally:
        filler.unlink()
    assert running.get(timeout=30) == big
    assert sample.add.delay(2, 3).get(timeout=30) == 5
    assert [line.split()[-1] for line in workers.lines() if line.startswith("start ")] == ["1"]
    assert proc.poll() is None
