"""Floors: bare client loops doing the broker operations a reliable queue needs, with no
Soloist in between, unbatched and batched (BATCH per round trip or transaction).

Each broker's `Floor` measures, in msg/s: `publish`, `publish_batched`, `consume` (take one
message under a lease or into a processing list, then remove it) and `consume_batched`,
and `latency` (p50, p99 in ms of publish → an idle consumer has it). `consume_batched`
can also hand each body to a function (benchmarks/ceiling.py: what Python must do anyway).
"""

from __future__ import annotations

import itertools
import multiprocessing
import sqlite3
import statistics
import time
from collections.abc import Callable
from typing import Any

from soloist.brokers.sqlite import WAITING

BODY = b'j{"v":1,"id":"0123456789abcdef0123456789abcdef","task":"suite.noop"}' + b" " * 40
BATCH = 100
INSERT = "INSERT INTO floor (queue, body, visible_at) VALUES (?, ?, ?)"


def _skip(body: bytes) -> None:
    """What a floor does with a message's body: nothing (see benchmarks/ceiling.py)."""


def rate(n: int, run: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    run()
    return n / (time.perf_counter() - t0)


def latencies(
    publish: Callable[[], object],
    open_consumer: Callable[[], Callable[[], Callable[[], object]]],
    rounds: int,
) -> tuple[float, float]:
    """p50, p99 in ms from just before a publish until an idle consumer has it.

    The consumer runs in a process of its own, as a worker does: `open_consumer` is called
    there (forked), opens its own connection and returns `consume`, which blocks until it
    has a message and returns how to settle it."""
    fork = multiprocessing.get_context("fork")
    here, there = fork.Pipe()

    def serve() -> None:
        consume = open_consumer()
        there.send(0.0)  # ready
        for _ in range(rounds):
            settle = consume()
            there.send(time.time())
            settle()

    child = fork.Process(target=serve, daemon=True)
    child.start()
    samples: list[float] = []
    try:
        if not here.poll(30):
            raise TimeoutError("the consumer process did not get ready in 30 s")
        here.recv()
        for _ in range(rounds):
            time.sleep(0.005)  # the consumer is blocked again by now
            t0 = time.time()
            publish()
            if not here.poll(5):
                raise TimeoutError("the floor's consumer did not get a message in 5 s")
            samples.append(here.recv() - t0)
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
    return percentiles([s * 1000 for s in samples])


def percentiles(ms: list[float]) -> tuple[float, float]:
    ms = sorted(ms)
    return statistics.median(ms), ms[max(int(len(ms) * 0.99) - 1, 0)]


def chunks(n: int) -> list[int]:
    return [min(BATCH, n - i) for i in range(0, n, BATCH)]


class RedisFloor:
    """LPUSH; LMOVE to a processing list + LREM; LPUSH → BLMOVE. Batched: pipelines."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.url = url
        self.r: Any = redis.Redis.from_url(url)
        self.src, self.busy = prefix + "floor:src", prefix + "floor:busy"

    def publish(self, n: int) -> float:
        try:
            return rate(n, lambda: [self.r.lpush(self.src, BODY) for _ in range(n)])
        finally:
            self.r.delete(self.src)

    def publish_batched(self, n: int) -> float:
        def run() -> None:
            for size in chunks(n):
                pipe = self.r.pipeline(transaction=False)
                for _ in range(size):
                    pipe.lpush(self.src, BODY)
                pipe.execute()

        try:
            return rate(n, run)
        finally:
            self.r.delete(self.src)

    def consume(self, n: int) -> float:
        self.r.lpush(self.src, *[BODY] * n)

        def run() -> None:
            while (body := self.r.lmove(self.src, self.busy, "RIGHT", "LEFT")) is not None:
                self.r.lrem(self.busy, 1, body)

        return rate(n, run)

    def consume_batched(self, n: int, each: Callable[[bytes], object] = _skip) -> float:
        self.r.lpush(self.src, *[BODY] * n)

        def run() -> None:
            for size in chunks(n):
                pipe = self.r.pipeline(transaction=False)
                for _ in range(size):
                    pipe.lmove(self.src, self.busy, "RIGHT", "LEFT")
                bodies = pipe.execute()
                for body in bodies:
                    each(body)
                    pipe.lrem(self.busy, 1, body)
                pipe.execute()

        return rate(n, run)

    def latency(self, rounds: int) -> tuple[float, float]:
        def open_consumer() -> Callable[[], Callable[[], object]]:
            import redis

            r: Any = redis.Redis.from_url(self.url)

            def blmove() -> Callable[[], object]:
                body = r.blmove(self.src, self.busy, 5, "RIGHT", "LEFT")
                return lambda: r.lrem(self.busy, 1, body)

            return blmove

        return latencies(lambda: self.r.lpush(self.src, BODY), open_consumer, rounds)

    def close(self) -> None:
        self.r.delete(self.src, self.busy)
        self.r.close()


class SQLiteFloor:
    """The broker's statements on a table of the broker's shape (queue, priority, lease
    expiry, receipt, delivery count; the hand-out index), with no Soloist in between:
    INSERT; claim (UPDATE … SET receipt, lease, count WHERE id IN (the first due ids in
    hand-out order) RETURNING) + fenced DELETE (WHERE receipt = ? AND id …); each its own
    transaction, or BATCH per transaction. WAL and synchronous=NORMAL, as the broker.
    Latency: a consumer polling for the claim every millisecond (the broker's shortest poll)."""

    LEASE = 60.0

    def __init__(self, path: str) -> None:
        self.path = path
        self.db = self._connect()
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS floor (id INTEGER PRIMARY KEY, queue TEXT NOT NULL,"
            " priority INTEGER NOT NULL DEFAULT 0, visible_at REAL NOT NULL,"
            f" receipt INTEGER NOT NULL DEFAULT {WAITING}, deliveries INTEGER NOT NULL DEFAULT 0,"
            " body BLOB NOT NULL);"
            "CREATE INDEX IF NOT EXISTS floor_ready ON floor (queue, priority DESC, id);"
        )
        self.receipts = itertools.count(1 << 61)  # 8-byte, as WAITING: rows keep their size

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=60, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _insert(self, db: sqlite3.Connection) -> None:
        db.execute(INSERT, ("q", BODY, time.monotonic()))

    def _claim(self, db: sqlite3.Connection, size: int) -> tuple[int, list[Any]]:
        """(receipt, [(id, body), …]): up to `size` due messages leased to a new receipt."""
        receipt, now = next(self.receipts), time.monotonic()
        rows = db.execute(
            "UPDATE floor SET receipt = ?, visible_at = ?, deliveries = deliveries + 1"
            " WHERE id IN (SELECT id FROM floor WHERE queue = 'q' AND visible_at <= ?"
            " ORDER BY priority DESC, id LIMIT ?) RETURNING id, body",
            (receipt, now + self.LEASE, now, size),
        ).fetchall()
        return receipt, rows

    def _delete(self, db: sqlite3.Connection, receipt: int, ids: list[int]) -> None:
        db.execute(
            f"DELETE FROM floor WHERE receipt = ? AND id IN ({','.join('?' * len(ids))})",
            (receipt, *ids),
        )

    def publish(self, n: int) -> float:
        try:
            return rate(n, lambda: [self._insert(self.db) for _ in range(n)])
        finally:
            self.db.execute("DELETE FROM floor")

    def publish_batched(self, n: int) -> float:
        def run() -> None:
            for size in chunks(n):
                self.db.execute("BEGIN IMMEDIATE")
                for _ in range(size):
                    self._insert(self.db)
                self.db.execute("COMMIT")

        try:
            return rate(n, run)
        finally:
            self.db.execute("DELETE FROM floor")

    def _fill(self, n: int) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(INSERT, [("q", BODY, 0.0)] * n)
        self.db.execute("COMMIT")

    def consume(self, n: int) -> float:
        self._fill(n)

        def run() -> None:
            while True:
                self.db.execute("BEGIN IMMEDIATE")
                receipt, rows = self._claim(self.db, 1)
                self.db.execute("COMMIT")
                if not rows:
                    return
                self._delete(self.db, receipt, [rows[0][0]])

        return rate(n, run)

    def consume_batched(self, n: int, each: Callable[[bytes], object] = _skip) -> float:
        self._fill(n)

        def run() -> None:
            while True:
                self.db.execute("BEGIN IMMEDIATE")
                receipt, rows = self._claim(self.db, BATCH)
                self.db.execute("COMMIT")
                if not rows:
                    return
                for _, body in rows:
                    each(body)
                self.db.execute("BEGIN IMMEDIATE")
                self._delete(self.db, receipt, [row[0] for row in rows])
                self.db.execute("COMMIT")

        return rate(n, run)

    def latency(self, rounds: int) -> tuple[float, float]:
        def open_consumer() -> Callable[[], Callable[[], object]]:
            consumer = self._connect()

            def claim() -> Callable[[], object]:
                while not (claimed := self._claim(consumer, 1))[1]:
                    time.sleep(0.001)
                receipt, rows = claimed
                return lambda: self._delete(consumer, receipt, [rows[0][0]])

            return claim

        return latencies(lambda: self._insert(self.db), open_consumer, rounds)

    def close(self) -> None:
        self.db.execute("DROP TABLE floor")
        self.db.close()


class AMQPFloor:
    """On a quorum queue with the broker's own arguments, persistent messages: publish
    with a confirm each, or BATCH per transaction; basic_consume + basic_ack each, or with
    prefetch BATCH and one multiple-ack per BATCH; publish → a pushed consumer."""

    def __init__(self, url: str, queue: str, arguments: dict[str, Any]) -> None:
        import pika

        self.pika, self.url, self.queue = pika, url, queue
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        self.ch.queue_declare(queue, durable=True, arguments=arguments)
        self.ch.confirm_delivery()
        self.tx = self.conn.channel()
        self.tx.tx_select()
        self.props = pika.BasicProperties(delivery_mode=2, message_id="m", headers={"a": 0})

    def _send(self, ch: Any) -> None:
        ch.basic_publish("", self.queue, BODY, self.props, mandatory=True)

    def publish(self, n: int) -> float:
        try:
            return rate(n, lambda: self._send_each(n))
        finally:
            self.ch.queue_purge(self.queue)

    def _send_each(self, n: int) -> None:
        for _ in range(n):
            self._send(self.ch)

    def _fill(self, n: int) -> None:
        for size in chunks(n):
            for _ in range(size):
                self._send(self.tx)
            self.tx.tx_commit()

    def publish_batched(self, n: int) -> float:
        try:
            return rate(n, lambda: self._fill(n))
        finally:
            self.ch.queue_purge(self.queue)

    def _consume(self, n: int, prefetch: int, each: Callable[[bytes], object] = _skip) -> float:
        sub = self.conn.channel()
        sub.basic_qos(prefetch_count=prefetch)
        t0 = time.perf_counter()
        for got, (method, _, body) in enumerate(sub.consume(self.queue), 1):
            each(body)
            if got % prefetch == 0 or got == n:
                sub.basic_ack(method.delivery_tag, multiple=True)
            if got == n:
                break
        elapsed = time.perf_counter() - t0
        sub.cancel()
        sub.close()
        return n / elapsed

    def consume(self, n: int) -> float:
        self._fill(n)
        return self._consume(n, 1)

    def consume_batched(self, n: int, each: Callable[[bytes], object] = _skip) -> float:
        self._fill(n)
        return self._consume(n, BATCH, each)

    def latency(self, rounds: int) -> tuple[float, float]:
        def open_consumer() -> Callable[[], Callable[[], object]]:
            conn = self.pika.BlockingConnection(self.pika.URLParameters(self.url))
            ch = conn.channel()
            ch.basic_qos(prefetch_count=1)
            pushed = ch.consume(self.queue)

            def consume() -> Callable[[], object]:
                method, _, _ = next(pushed)
                return lambda: ch.basic_ack(method.delivery_tag)

            return consume

        return latencies(lambda: self._send(self.ch), open_consumer, rounds)

    def close(self) -> None:
        self.ch.queue_delete(self.queue)
        self.conn.close()
