"""Celery's queues on RabbitMQ, consumed as Celery's own worker consumes them.

Celery declares its queues itself (classic by default, quorum with
`task_default_queue_type = "quorum"`), bound to its direct exchange; Soloist's own
RabbitMQ broker uses quorum queues and a topology of its own, so this broker leaves
Celery's queues as Celery declared them and consumes from them with py-amqp (Celery's
own AMQP client). On RabbitMQ the lease is the channel's unacked delivery:

* A message is held until the worker acks it or its connection ends. A thread of the
  broker answers heartbeats and reads ahead every `heartbeat / 4` seconds, whatever the
  main thread runs, so a long inline task keeps its delivery (set RabbitMQ's
  `consumer_timeout` above the longest task, as for Celery).
* The fence is the connection: after a reconnect, settles of deliveries taken on the
  old one are refused (RabbitMQ has requeued them).
* A delivery count exists only on quorum queues (`x-delivery-count`): there a message
  that killed `max_deliveries` workers is dead-lettered; a classic queue marks a
  redelivery with a flag only (delivery count 2).
* ETA messages are held unacked in the worker until due, as Celery's worker holds them;
  the prefetch grows by the number held, so they do not starve the rest.
* A dead letter is republished (with publisher confirms) to `<queue>.soloist.dead`, a
  durable queue beside Celery's, before the original is acked.

Each message is handed to the task runner in the same JSON envelope kombu keeps on Redis
(see `protocol`), so one decoder serves both brokers.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import amqp
from amqp.exceptions import ChannelError, NotFound
from kombu.utils.json import dumps, loads

from ..brokers.amqp import AMQPBroker
from ..brokers.base import (
    DEFAULT_MAX_DELIVERIES,
    Broker,
    DeadLetter,
    Delivery,
    QueueStats,
    poison_reason,
)
from ..errors import BrokerUnavailable, ConfigurationError
from ..urls import redact
from . import protocol

T = TypeVar("T")

DEAD_SUFFIX = ".soloist.dead"
#: Celery's default heartbeat (`broker_heartbeat`), in seconds.
DEFAULT_HEARTBEAT = 120.0
#: Errors that mean the connection is gone.
_LOST = (OSError, amqp.exceptions.ConnectionError, amqp.exceptions.RecoverableConnectionError)


def envelope(message: Any) -> bytes:
    """An AMQP message as kombu's JSON envelope (what protocol.decode reads)."""
    props, info = message.properties, message.delivery_info
    raw = message.body
    if isinstance(raw, str):  # py-amqp decodes bodies that name a content encoding
        raw = raw.encode(props.get("content_encoding") or "utf-8")
    text: str = dumps(
        {
            "body": base64.b64encode(raw).decode(),
            "content-type": props.get("content_type"),
            "content-encoding": props.get("content_encoding"),
            "headers": props.get("application_headers") or {},
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": str(info.get("delivery_tag")),
                "delivery_info": {
                    "exchange": info.get("exchange"),
                    "routing_key": info.get("routing_key"),
                    "redelivered": info.get("redelivered", False),
                },
                "priority": props.get("priority"),
                "correlation_id": props.get("correlation_id"),
                "reply_to": props.get("reply_to"),
            },
        }
    )
    return text.encode()


def message_of(env: dict[str, Any]) -> amqp.Message:
    """The AMQP message a kombu envelope describes (to publish it again)."""
    props = env["properties"]
    body = env.get("body") or ""
    raw = base64.b64decode(body) if props.get("body_encoding") == "base64" else body.encode()
    return amqp.Message(
        raw,
        content_type=env.get("content-type"),
        content_encoding=env.get("content-encoding"),
        application_headers=env.get("headers") or {},
        delivery_mode=2,
        priority=props.get("priority") or 0,
        correlation_id=props.get("correlation_id"),
        reply_to=props.get("reply_to"),
    )


class CeleryAMQPBroker(Broker):
    """Soloist's broker contract over Celery's RabbitMQ queues (see the module docstring).

    The URL is Celery's broker URL with `celery+` before its scheme; its query takes
    `heartbeat` (seconds), `queue_type` (classic or quorum, as Celery declares them),
    `exchange` (Celery's default exchange) and `max_deliveries`.
    """

    def __init__(self, url: str, max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> None:
        self.url = url
        parts = urlsplit(url)
        if parts.scheme not in ("celery+amqp", "celery+pyamqp"):
            raise ConfigurationError(f"not a celery+amqp:// URL: {redact(url)}")
        query = dict(parse_qsl(parts.query))
        try:
            self.heartbeat_interval = float(query.get("heartbeat", DEFAULT_HEARTBEAT))
            self.max_deliveries = int(query.get("max_deliveries", max_deliveries))
        except ValueError as exc:
            raise ConfigurationError(f"bad option in {redact(url)}: {exc}") from None
        self.queue_type = query.get("queue_type", "classic")
        self.exchange = query.get("exchange", "celery")
        self._params = {
            "host": f"{parts.hostname or 'localhost'}:{parts.port or 5672}",
            "userid": unquote(parts.username or "guest"),
            "password": unquote(parts.password or "guest"),
            "virtual_host": unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
            "heartbeat": self.heartbeat_interval,
            "connect_timeout": 5,
        }
        p = self._params
        vhost = quote(str(p["virtual_host"]), safe="")
        plain = f"amqp://{quote(str(p['userid']))}:{quote(str(p['password']))}@{p['host']}/{vhost}"
        #: Heartbeats and the worker registry, in Soloist's own RabbitMQ queues.
        self.registry = AMQPBroker(plain, self.max_deliveries)
        self._lock = threading.RLock()
        self._conn: Any = None
        self._channel: Any = None
        self._generation = 0
        self._consuming: set[str] = set()
        self._declared: set[str] = set()
        self._buffer: deque[Any] = deque()
        #: ETA messages held until due: (eta, seq, delivery).
        self._parked: list[tuple[float, int, Delivery]] = []
        self._held: set[int] = set()
        self._prefetch = 0
        self._seq = 0
        self._closed = False
        self._pump = threading.Thread(target=self._service, name="soloist-amqp", daemon=True)
        self._pump_started = False

    def connection_params(self) -> dict[str, Any]:
        """py-amqp's connection arguments for this URL (the pidbox's own connection)."""
        return dict(self._params)

    # -- connection -----------------------------------------------------------------

    def _connect(self) -> Any:
        if self._conn is None:
            try:
                conn = amqp.Connection(**self._params)
                conn.connect()
            except _LOST as exc:
                where = redact(self.url)
                raise BrokerUnavailable(f"cannot reach RabbitMQ at {where}: {exc}") from None
            self._conn, self._channel = conn, conn.channel()
            if not self._pump_started:
                self._pump_started = True
                self._pump.start()
        return self._channel

    def _drop(self) -> None:
        """Forget a dead connection; RabbitMQ requeues what it had handed out, so every
        delivery taken on it is stale from now on."""
        if self._conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to release
                self._conn.collect()
        self._conn = self._channel = None
        self._generation += 1
        self._consuming, self._declared, self._held = set(), set(), set()
        self._buffer.clear()
        self._parked.clear()
        self._prefetch = 0

    def _call(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(channel)` under the lock, reconnecting once if the connection died."""
        with self._lock:
            for attempt in (1, 2):
                channel = self._connect()
                try:
                    return fn(channel)
                except (*_LOST, ChannelError):
                    self._drop()
                    if attempt == 2:
                        raise BrokerUnavailable(f"lost RabbitMQ at {redact(self.url)}") from None
        raise AssertionError("unreachable")

    def _service(self) -> None:
        """Answer heartbeats and read ahead while the main thread runs a task."""
        beat = self.heartbeat_interval
        interval = max(beat / 4, 0.2) if beat else 1.0
        while not self._closed:
            time.sleep(interval)
            with self._lock:
                if self._conn is None or self._closed:
                    continue
                try:
                    self._conn.heartbeat_tick()
                    self._drain(0.001)
                except (*_LOST, ChannelError):
                    self._drop()

    def _drain(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            self._conn.drain_events(timeout=timeout)

    def _declare(self, channel: Any, queue: str) -> Any:
        """Celery's queue as Celery declares it: durable, bound to its direct exchange."""
        if queue in self._declared:
            return channel
        args = {"x-queue-type": "quorum"} if self.queue_type == "quorum" else None
        try:
            channel.queue_declare(queue, passive=True)
        except (NotFound, ChannelError):
            channel = self._channel = self._conn.channel()
            channel.exchange_declare(self.exchange, "direct", durable=True, auto_delete=False)
            channel.queue_declare(queue, durable=True, auto_delete=False, arguments=args)
            channel.queue_bind(queue, self.exchange, queue)
        self._declared.add(queue)
        return channel

    # -- the contract ---------------------------------------------------------------

    def publish(self, queue: str, body: bytes, *, delay: float = 0, priority: int = 0) -> str:
        """Publish a kombu envelope's message to `queue` (Soloist's own tools: requeue)."""
        env = protocol.envelope(body)

        def send(channel: Any) -> None:
            channel = self._declare(channel, queue)
            channel.basic_publish_confirm(message_of(env), exchange="", routing_key=queue)

        self._call(send)
        return str(env["properties"].get("delivery_tag", ""))

    def fetch(
        self, queues: Sequence[str], max_count: int, lease: float, timeout: float
    ) -> list[Delivery]:
        deadline = time.monotonic() + timeout

        def take(channel: Any) -> list[Delivery]:
            self._consume(channel, queues, max_count)
            while True:
                got = self._ready(max_count)
                remaining = deadline - time.monotonic()
                if got or remaining <= 0:
                    return got
                wait = remaining
                if self._parked:
                    wait = min(wait, max(self._parked[0][0] - time.time(), 0.001))
                self._drain(min(wait, 0.25))

        return self._call(take)

    def _consume(self, channel: Any, queues: Sequence[str], max_count: int) -> None:
        want = max_count + len(self._parked)
        if want != self._prefetch:
            channel.basic_qos(0, want, False)
            self._prefetch = want
        for queue in queues:
            if queue not in self._consuming:
                channel = self._declare(channel, queue)
                channel.basic_consume(queue, callback=self._buffer.append, no_ack=False)
                self._consuming.add(queue)

    def _ready(self, max_count: int) -> list[Delivery]:
        """Due messages: parked ones whose ETA came first, then new ones (parking those
        not due yet, dead-lettering poison)."""
        now = time.time()
        got: list[Delivery] = []
        while self._parked and self._parked[0][0] <= now and len(got) < max_count:
            got.append(heapq.heappop(self._parked)[2])
        while self._buffer and len(got) < max_count:
            message = self._buffer.popleft()
            delivery = self._delivery(message)
            eta = protocol.eta_of(delivery.body)
            if delivery.delivery_count > self.max_deliveries:
                self.dead_letter(delivery, poison_reason(delivery.delivery_count - 1))
            elif eta is not None and eta > now:
                self._seq += 1
                heapq.heappush(self._parked, (eta, self._seq, delivery))
            else:
                got.append(delivery)
        return got

    def _delivery(self, message: Any) -> Delivery:
        info = message.delivery_info
        tag = int(info["delivery_tag"])
        self._held.add(tag)
        headers = message.properties.get("application_headers") or {}
        count = headers.get("x-delivery-count")
        redelivered = 2 if info.get("redelivered") else 1
        deliveries = count + 1 if isinstance(count, int) else redelivered
        queue = str(info.get("routing_key") or "")
        # The task runner reads the envelope; the task id stands in for the message id.
        body = envelope(message)
        task_id = str(headers.get("id") or tag)
        return Delivery(task_id, queue, body, deliveries, 0, (self._generation, tag))

    def _settle(self, delivery: Delivery, how: Callable[[Any, int], None]) -> bool:
        generation, tag = delivery.receipt

        def settle(channel: Any) -> bool:
            if generation != self._generation or tag not in self._held:
                return False
            how(channel, tag)
            self._held.discard(tag)
            return True

        with self._lock:
            if self._conn is None:
                return False
            try:
                return settle(self._channel)
            except (*_LOST, ChannelError):
                # A closed channel (RabbitMQ's consumer_timeout, say) has lost its
                # deliveries as a closed connection has: start afresh.
                self._drop()
                return False

    def ack(self, delivery: Delivery) -> bool:
        return self._settle(delivery, lambda ch, tag: ch.basic_ack(tag))

    def retry(self, delivery: Delivery, delay: float, *, counted: bool = True) -> bool:
        """Celery's `Task.retry()` already published the retry: settle this one. A task
        deferred by a Soloist limit (`counted=False`) is given back at once instead."""
        if not counted:
            self.release([delivery])
            return True
        return self.ack(delivery)

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        dead = f"{delivery.queue}{DEAD_SUFFIX}"

        def bury(channel: Any, tag: int) -> None:
            if dead not in self._declared:
                channel.queue_declare(dead, durable=True, auto_delete=False)
                self._declared.add(dead)
            headers = {
                "x-soloist-reason": reason,
                "x-soloist-dead-at": time.time(),
                "x-soloist-deliveries": delivery.delivery_count,
                "x-soloist-id": delivery.id,
            }
            letter = amqp.Message(delivery.body, application_headers=headers, delivery_mode=2)
            channel.basic_publish_confirm(letter, exchange="", routing_key=dead)
            channel.basic_ack(tag)

        return self._settle(delivery, bury)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            self._settle(delivery, lambda ch, tag: ch.basic_reject(tag, requeue=True))
        with self._lock:
            gone = {d.receipt for d in deliveries}
            self._parked = [p for p in self._parked if p[2].receipt not in gone]
            heapq.heapify(self._parked)

    def abandon(self, deliveries: Sequence[Delivery]) -> None:
        """Back to the queue at once (a quorum queue counts it as a delivery)."""
        for delivery in deliveries:
            self._settle(delivery, lambda ch, tag: ch.basic_reject(tag, requeue=True))

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[Delivery]:
        """Held for as long as the connection lives: the stale ones are those of an older
        connection."""
        with self._lock:
            return [
                d
                for d in deliveries
                if d.receipt[0] != self._generation or d.receipt[1] not in self._held
            ]

    def ping(self) -> None:
        """Connect if not connected, then one round trip: a passive declare of an exchange
        every RabbitMQ has."""
        self._call(lambda channel: channel.exchange_declare("amq.direct", "direct", passive=True))

    def depth(self, queue: str) -> int:
        def count(channel: Any) -> int:
            channel = self._declare(channel, queue)
            return int(channel.queue_declare(queue, passive=True).message_count)

        return self._call(count)

    def stats(self, queue: str) -> QueueStats:
        return QueueStats(self.depth(queue), dead=self.depth(f"{queue}{DEAD_SUFFIX}"))

    def purge(self, queue: str) -> int:
        return int(self._call(lambda ch: self._declare(ch, queue).queue_purge(queue) or 0))

    def _letters(self, queue: str, limit: int) -> list[tuple[int, DeadLetter]]:
        """Up to `limit` dead letters, taken (unacked) on the current channel."""
        dead = f"{queue}{DEAD_SUFFIX}"
        channel = self._declare(self._connect(), dead)
        out: list[tuple[int, DeadLetter]] = []
        while len(out) < limit and (m := channel.basic_get(dead, no_ack=False)) is not None:
            h = m.properties.get("application_headers") or {}
            letter = DeadLetter(
                str(h.get("x-soloist-id", m.delivery_tag)),
                queue,
                bytes(m.body),
                str(h.get("x-soloist-reason", "")),
                int(h.get("x-soloist-deliveries", 0)),
                0,
                float(h.get("x-soloist-dead-at", 0)),
            )
            out.append((m.delivery_tag, letter))
        return out

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            taken = self._letters(queue, limit)
            for tag, _ in taken:
                self._channel.basic_reject(tag, requeue=True)
            return [letter for _, letter in taken]

    def _settle_dead(self, queue: str, ids: Sequence[str] | None, requeue: bool) -> int:
        with self._lock:
            done = 0
            for tag, letter in self._letters(queue, 100_000):
                if ids is not None and letter.id not in ids:
                    self._channel.basic_reject(tag, requeue=True)
                    continue
                if requeue:
                    env = loads(letter.body)
                    self._channel.basic_publish_confirm(
                        message_of(env), exchange="", routing_key=queue
                    )
                self._channel.basic_ack(tag)
                done += 1
            return done

    def requeue_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return self._settle_dead(queue, ids, True)

    def drop_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return self._settle_dead(queue, ids, False)

    def heartbeat(self, worker_id: str, info: bytes, ttl: float) -> None:
        self.registry.heartbeat(worker_id, info, ttl)

    def workers(self) -> dict[str, tuple[bytes, float]]:
        return self.registry.workers()

    def forget_worker(self, worker_id: str) -> None:
        self.registry.forget_worker(worker_id)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                with contextlib.suppress(Exception):  # a broken one: nothing to close
                    self._conn.close()
            self._conn = self._channel = None
        self.registry.close()


def amqp_url(url: str, conf: Any) -> str:
    """The celery+amqp URL of a Celery app's RabbitMQ broker and its settings."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["heartbeat"] = str(conf.broker_heartbeat or 0)
    query["queue_type"] = str(getattr(conf, "task_default_queue_type", None) or "classic")
    query["exchange"] = str(conf.task_default_exchange or "celery")
    scheme = f"celery+{parts.scheme}"
    return urlunsplit(parts._replace(scheme=scheme, query=urlencode(query)))
