"""`AMQPBroker`: the broker contract on RabbitMQ, a facade over the I/O thread (`Link`),
the queue topology (`Topology`), the consume state machine (`Consumer`), the dead-letter
store (`DeadLetterStore`) and the heartbeat queue (heartbeats.py)."""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pika
import pika.exceptions as pe

from ...errors import BrokerUnavailable, ConfigurationError
from ...urls import passwords, redact
from ..base import (
    DEFAULT_MAX_DELIVERIES,
    AckPipe,
    Broker,
    DeadLetter,
    Delivery,
    QueueStats,
    url_options,
)
from . import heartbeats, schema
from .browse import admin_channel
from .consumer import WINDOW, Consumer
from .dead_letters import DeadLetterStore
from .link import TICK, Link
from .pipe import AMQPAckPipe
from .session import Down, Held, Request, Session
from .topology import Topology
from .wire import DEFAULT_PUBLISH_TIMEOUT, H_PRIOR, H_RETRIES, OPTIONS, Out

T = TypeVar("T")


class AMQPBroker(Broker):
    def __init__(self, url: str, max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> None:
        self.url = url
        self.where = redact(url)
        if urlsplit(url).scheme not in ("amqp", "amqps"):
            raise ConfigurationError(f"not an AMQP URL: {self.where}")
        pika_url, options = url_options(url, OPTIONS, others=True)
        self.max_deliveries = options.get("max_deliveries", max_deliveries)
        self.topology = Topology(
            self.max_deliveries, options.get("max_priority", 0), options.get("queue_expires", 0.0)
        )
        self.consumer = Consumer(self.topology)
        self.publish_timeout = options.get("publish_timeout", DEFAULT_PUBLISH_TIMEOUT)
        self.dead = DeadLetterStore(self.topology, self.publish_timeout)
        try:
            self.params = pika.URLParameters(pika_url)
        except ValueError as exc:  # pika's own options, and any it does not know
            raise ConfigurationError(f"bad AMQP URL {self.where}: {exc}") from None
        self.params.client_properties = {"connection_name": "soloist"}
        if urlsplit(url).scheme == "amqps":
            # Verify the server against the CA the URL names (else the system's CAs).
            context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
            self.params.ssl_options = pika.SSLOptions(context, self.params.host)
        self._secrets = passwords(url)
        self._link: Link | None = None
        self._link_lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._schema_checked = False
        self._schema_lock = threading.Lock()
        self._beat_ttls: dict[str, float] = {}

    # -- plumbing ----------------------------------------------------------------------

    def lanes(self, queue: str) -> list[str]:
        """The work queues of `queue`, highest priority first."""
        return self.topology.lanes(queue)

    def _call(
        self, work: Callable[[Session, Request], T], timeout: float, retry: bool = False
    ) -> T:
        with self._link_lock:
            link = self._link
            if link is None or not link.is_alive():
                link = self._link = Link(self.params, self.where, self._secrets)
                link.start()
        if not self._schema_checked:
            self._check_schema(link, timeout, retry)
        return link.call(work, timeout, retry)

    def _check_schema(self, link: Link, timeout: float, retry: bool) -> None:
        """Before the first call: refuse a virtual host whose queues have another layout."""
        with self._schema_lock:
            if not self._schema_checked:
                link.call(lambda s, _: schema.claim(s, self.where), timeout, retry)
                self._schema_checked = True

    def _must(self, work: Callable[[Session, Request], T]) -> T:
        """An operator call: wait for a reconnect up to publish_timeout, then give up."""
        try:
            return self._call(work, self.publish_timeout, retry=True)
        except Down:
            raise BrokerUnavailable(
                f"RabbitMQ at {self.where} unreachable for {self.publish_timeout:.0f}s"
            ) from None

    # -- publish and fetch -------------------------------------------------------------

    def publish(self, queue: str, body: bytes, *, delay: float = 0, priority: int = 0) -> str:
        out = Out(queue, self.topology.lane(queue, priority), body, uuid.uuid4().hex, {}, delay)
        # Retried across reconnects until confirmed: a publish that returns is durable; a
        # connection lost before the confirm may leave a duplicate (at-least-once).
        self._must(lambda s, _: self.topology.send(s, out))
        return out.message_id

    def publish_many(self, items: Sequence[tuple[str, bytes, float, int]]) -> list[str]:
        """One transaction for the whole batch (retried whole across reconnects)."""
        outs = [
            Out(q, self.topology.lane(q, p), body, uuid.uuid4().hex, {}, delay)
            for q, body, delay, p in items
        ]
        if outs:
            self._must(lambda s, _: self.topology.send_many(s, outs))
        return [out.message_id for out in outs]

    def fetch(
        self, queues: Sequence[str], max_count: int, lease: float, timeout: float
    ) -> list[Delivery]:
        """One lane (one queue, no priorities): a consumer streams it (`Consumer.stream`). Several:
        basic.get over the lanes in order (`Consumer.sweep`), for exact queue and priority order."""
        lanes = [(q, lane) for q in queues for lane in self.topology.lanes(q)]
        until = time.monotonic() + max(timeout, 0)
        count = max(max_count, 1)

        def work(s: Session, req: Request) -> Any:  # a list of deliveries, or LATER
            if len(lanes) == 1:
                return self.consumer.stream(s, req, *lanes[0], count, until)
            return self.consumer.sweep(s, req, lanes, count, until)

        with self._fetch_lock:
            while True:
                try:
                    got: list[Delivery] = self._call(work, self.publish_timeout)
                    return got
                except Down:
                    # Reconnecting: an idle fetch, not an error; the worker polls again.
                    time.sleep(max(min(until - time.monotonic(), TICK), 0))
                    if time.monotonic() >= until:
                        return []

    # -- settling ----------------------------------------------------------------------

    def _settle(self, delivery: Delivery, work: Callable[[Session, Held, int], None]) -> bool:
        def run(s: Session, _: Request) -> bool:
            held = s.holds(delivery.receipt)
            if held is None:
                return False
            work(s, held, delivery.receipt[1])
            return True

        try:
            return self._call(run, self.publish_timeout)
        except (Down, BrokerUnavailable):
            return False  # its channel died with the connection: someone else gets it

    def ack(self, delivery: Delivery) -> bool:
        return self._settle(delivery, lambda s, held, tag: self.consumer.ack(s, tag))

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """One hop to the I/O thread, one multiple-ack where the tags allow it, and one
        round trip to learn that the server processed them."""

        def run(s: Session, _: Request) -> list[bool]:
            held = [s.holds(d.receipt) is not None for d in deliveries]
            tags = list(
                dict.fromkeys(d.receipt[1] for d, h in zip(deliveries, held, strict=True) if h)
            )
            if tags:
                self.consumer.ack_tags(s, tags)
                self.consumer.confirm_acks(s)
            return held

        try:
            return self._call(run, self.publish_timeout)
        except (Down, BrokerUnavailable):
            return [False] * len(deliveries)

    def ack_pipe(self, results: object) -> AckPipe:
        """basic.ack has no reply: each ack is written as its task ends, and the round
        trip that confirms the server processed them waits for `collect`. A commit per
        ack: fetches hand out at most a window at a time (`consumer.WINDOW`)."""
        self.consumer.window = WINDOW
        return AMQPAckPipe(self)

    def retry(self, delivery: Delivery, delay: float, *, counted: bool = True) -> bool:
        def work(s: Session, held: Held, tag: int) -> None:
            headers = held.copy_headers({H_RETRIES: held.retries + int(counted), H_PRIOR: 0})
            self.consumer.move(s, tag, held.lane, delivery.body, headers, delay=delay)

        return self._settle(delivery, work)

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        def work(s: Session, held: Held, tag: int) -> None:
            headers = self.consumer.dead_headers(held, held.count, reason)
            self.consumer.move(s, tag, f"{held.queue}.dead", delivery.body, headers)

        return self._settle(delivery, work)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give `deliveries` back (see `Consumer.give_back`), and end the stream: the worker stops
        or takes fewer, so what the consumer pushed and no fetch took goes back too."""
        self._give_back(deliveries, counted=False)

    def abandon(self, deliveries: Sequence[Delivery]) -> None:
        """Copies with the count raised, then acks (`Consumer.give_back`): the lease is the
        channel's life, so ending it by time, as other brokers do, would never happen."""
        self._give_back(deliveries, counted=True)

    def _give_back(self, deliveries: Sequence[Delivery], counted: bool) -> None:
        def work(s: Session, _: Request) -> None:
            if not counted:
                self.consumer.end_stream(s)
            kept = []
            for d in deliveries:
                held = s.holds(d.receipt)
                if held is not None:
                    kept.append((d.receipt[1], held, d.body))
            self.consumer.give_back(s, kept, counted=counted)
            if kept:
                self.consumer.confirm_acks(s)

        if self._link is None:
            return  # never connected: nothing is held
        with contextlib.suppress(Down, BrokerUnavailable):
            # Its channel died with the connection: the server returned everything, counted.
            self._call(work, self.publish_timeout)

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[Delivery]:
        """A liveness check: the lease lasts as long as the channel; `lease` is unused."""
        try:
            return self._call(
                lambda s, _: [d for d in deliveries if s.holds(d.receipt) is None],
                self.publish_timeout,
            )
        except (Down, BrokerUnavailable):
            return list(deliveries)

    # -- operators ---------------------------------------------------------------------

    def _count(self, s: Session, names: Sequence[str], purge: bool = False) -> int:
        """Ready messages in the named queues (purged if asked); missing queues count 0.

        On `pub`, the declaring channel: one round trip a queue. A missing one closes it
        (404), and `repair` opens another at once."""
        total = 0
        for name in names:
            try:
                ok = s.pub.queue_declare(name, passive=True)
                total += int(
                    s.pub.queue_purge(name).method.message_count
                    if purge
                    else ok.method.message_count
                )
            except pe.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                s.repair()
                for delays in self.topology.delay_queues.values():
                    delays.discard(name)  # an expired delay queue
        return total

    def _buffered(self, s: Session, queue: str, drop: bool = False) -> int:
        """Messages the stream pushed to this process for `queue` and no fetch took:
        they wait, so depth counts them (and purge drops them)."""
        st = s.stream
        if st is None or st.queue != queue:
            return 0
        s.conn.process_data_events(time_limit=0)  # what arrived during the counting
        count = len(st.buffer)
        if drop and count:
            tags = [method.delivery_tag for method, _, _ in st.buffer]
            st.buffer.clear()
            self.consumer.ack_tags(s, tags)
            self.consumer.confirm_acks(s)
        return count

    def ping(self) -> None:
        """An empty call on the I/O thread: it answers once the connection is open (the
        first call opens it, and checks the layout), waiting through a reconnect up to
        publish_timeout."""
        self._must(lambda s, _: None)

    def depth(self, queue: str) -> int:
        """Ready messages in the lanes, plus those waiting in the delay queues this process
        used (AMQP 0-9-1 cannot list queues, so another process's delays are not seen)."""
        return self._must(
            lambda s, _: (
                self._count(s, self.topology.lanes(queue) + self.topology.delays(queue))
                + self._buffered(s, queue)
            )
        )

    def stats(self, queue: str) -> QueueStats:
        """In-flight is None: AMQP reports a queue's ready messages, not its unacked ones."""

        def work(s: Session, _: Request) -> QueueStats:
            delayed = self._count(s, self.topology.delays(queue))
            ready = self._count(s, self.topology.lanes(queue)) + self._buffered(s, queue)
            return QueueStats(ready + delayed, delayed, None, self._count(s, [f"{queue}.dead"]))

        return self._must(work)

    def purge(self, queue: str) -> int:
        return self._must(
            lambda s, _: (
                self._count(s, self.topology.lanes(queue) + self.topology.delays(queue), purge=True)
                + self._buffered(s, queue, drop=True)
            )
        )

    def delete(self, queue: str) -> None:
        """Delete `queue`'s lanes, dead letters and known delay queues, messages and all."""

        def work(s: Session, _: Request) -> None:
            delays = self.topology.delay_queues.pop(queue, ())
            names = [*self.topology.lanes(queue), f"{queue}.dead", *delays]
            with admin_channel(s) as ch:
                for name in names:
                    ch.queue_delete(name)  # a missing queue is no error
                    s.declared.pop(name, None)
            s.declared.pop(queue, None)

        self._must(work)

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        return self._must(lambda s, _: self.dead.read(s, queue, limit))

    def requeue_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return self._must(lambda s, _: self.dead.pick(s, queue, ids, requeue=True))

    def drop_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return self._must(lambda s, _: self.dead.pick(s, queue, ids, requeue=False))

    # -- liveness ----------------------------------------------------------------------

    def heartbeat(self, worker_id: str, info: bytes, ttl: float) -> None:
        self._beat_ttls[worker_id] = ttl
        props = heartbeats.beat_properties(worker_id, ttl)
        self._must(lambda s, _: heartbeats.send(s, info, props))

    def forget_worker(self, worker_id: str) -> None:
        # Messages cannot be deleted from the middle of a queue: a newer tombstone hides
        # the older heartbeats until `workers()` drops them or they expire.
        ttl = self._beat_ttls.pop(worker_id, heartbeats.TOMBSTONE_TTL)
        props = heartbeats.beat_properties(worker_id, ttl, gone=True)
        self._must(lambda s, _: heartbeats.send(s, b"", props))

    def workers(self) -> dict[str, tuple[bytes, float]]:
        return self._must(lambda s, _: heartbeats.alive(s, self.publish_timeout))

    def close(self) -> None:
        """Give back what the stream pushed and no fetch took, then close the connection;
        the server returns unacked deliveries (counted by the quorum queue, as for a dead
        worker). A later call connects again."""
        with self._link_lock:
            link, self._link = self._link, None
        if link is None:
            return
        if link.is_alive():
            with contextlib.suppress(Down, BrokerUnavailable):
                link.call(lambda s, _: self.consumer.end_stream(s), self.publish_timeout)
        link.stop()
