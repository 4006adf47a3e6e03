"""RabbitMQ (AMQP 0-9-1) broker: quorum queues, publisher confirms, and one I/O thread.

Why one I/O thread. pika is not thread-safe, the worker calls its broker from two threads
(fetch and settle from the main thread, extend and heartbeat from the keeper), and above
all a solo task blocks the main thread for as long as it runs. If the connection were
driven from the main thread, nobody would answer RabbitMQ's heartbeats during a long task,
the server would close the connection, the ack would fail and the task would run again
(Celery's solo pool). So a `_Link` thread owns the connection and does all pika work; the
public methods hand it a closure (`add_callback_threadsafe` wakes it) and wait for the
answer. Heartbeats flow whatever the main thread does, unless it holds the GIL in C code.

Topology, per logical queue Q (these suffixes are reserved):

* ``Q`` and, with ``?max_priority=N``, ``Q.p1`` … ``Q.pN``: the work queues ("lanes"), one
  per priority, because quorum queues have no priorities on RabbitMQ 3.10. All are quorum
  queues (durable, replicated, `x-delivery-count`), with ``x-delivery-limit`` =
  max_deliveries - 1 (RabbitMQ dead-letters once the count of returns exceeds it) and
  dead-lettering to ``Q.dead`` with the at-least-once strategy (which requires
  ``x-overflow: reject-publish``; no length limit is set, so nothing is rejected).
* ``Q.dead``: the dead-letter store, a quorum queue read with basic.get.
* ``<lane>.delay.<ms>``: delayed and retried messages wait here, not in a worker: a durable
  classic queue with ``x-message-ttl`` = ms that dead-letters back to its lane when the
  TTL runs out. Delays are rounded up to two significant digits (at most 10 % late) so the
  number of delay queues stays bounded; each expires (``x-expires``) once unused. Classic,
  because there can be many and a quorum queue holds three file handles for good (3.10),
  while a classic one holds one that the server can close when idle. The server has no
  delayed-message exchange plugin, and per-message TTL in one shared queue would make a
  short delay wait behind a long one.
* ``soloist.workers``: worker heartbeats, a non-durable classic queue of messages that
  expire after their ttl; `workers()` keeps the newest per worker and drops the rest.
* ``<name>.lock``: an exclusive queue, declared while one operator browses ``Q.dead`` or
  ``soloist.workers`` with basic.get (what one browser holds, another cannot see). Only
  one connection can hold an exclusive queue, and it vanishes with that connection.

Messages are persistent and carry `message_id` plus the headers named `H_*` below. Every
publish waits for its confirm (`mandatory`, so a publish to a missing queue fails).

Leases and fencing. A delivery's lease is its channel's life: RabbitMQ returns unacked
messages when the channel or connection dies (the quorum queue then raises the count), so
`extend` is a liveness check and `lease` values are not used. The receipt is (channel
epoch, delivery tag); a settle with a receipt of a dead channel returns False without
touching the wire. An ack returns True only once the server has processed it: it is
followed by a synchronous basic.qos on the same channel (AMQP acks have no reply).
RabbitMQ's `consumer_timeout` (30 min by default) closes a channel that holds a delivery
longer: its deliveries are returned and run again, the late ack returns False, and this
broker opens a fresh channel. Set it above your longest task (see the issue note).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import queue as stdqueue
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pika
import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from ..errors import BrokerUnavailable, ConfigurationError
from ..urls import passwords, redact, scrub
from .base import (
    DEFAULT_MAX_DELIVERIES,
    Broker,
    DeadLetter,
    Delivery,
    QueueStats,
    poison_reason,
)

log = logging.getLogger("soloist.brokers.amqp")

T = TypeVar("T")

#: Our headers. Counts live in headers because a retried or released message is a new
#: AMQP message, whose quorum `x-delivery-count` starts again at 0.
H_ATTEMPTS = "x-soloist-attempts"
H_PRIOR = "x-soloist-prior-deliveries"  # deliveries before this copy was published
H_REASON = "x-soloist-reason"
#: pika cannot encode floats in headers, so times and ttls travel as repr() strings.
H_DEAD_AT = "x-soloist-dead-at"
H_COUNT = "x-soloist-delivery-count"
H_WORKER = "x-soloist-worker"
H_SEEN = "x-soloist-seen"
H_TTL = "x-soloist-ttl"
H_GONE = "x-soloist-gone"
#: Headers RabbitMQ adds, which must not follow a copy we publish again.
_SERVER_HEADERS = (
    "x-delivery-count",
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
)
WORKERS_QUEUE = "soloist.workers"
#: URL query options of ours; the rest go to pika.URLParameters (heartbeat, …).
_OPTIONS = ("max_deliveries", "max_priority", "queue_expires", "publish_timeout", "ssl_ca_certs")
#: How long `publish` and operator calls wait for a lost connection to come back.
DEFAULT_PUBLISH_TIMEOUT = 30.0
#: The I/O thread wakes at least this often when nothing happens.
_TICK = 0.2
#: Reconnect back-off: doubles from the first value up to the second.
_BACKOFF = (0.2, 5.0)
#: A forgotten worker's tombstone outlives heartbeats of an unknown ttl this long.
_TOMBSTONE_TTL = 3600.0
#: Unique across the process, so a receipt never matches a later channel by chance.
_EPOCHS = itertools.count(1)
#: Connection-level failures: the session is gone, reconnect.
_LOST = (pe.AMQPConnectionError, pe.ConnectionWrongStateError, OSError)


class _Down(Exception):
    """The connection was down (or went down) before the request could be answered."""


@dataclass
class _Held:
    """What the I/O thread remembers of a delivery it handed out."""

    queue: str
    lane: str
    message_id: str
    headers: dict[str, Any]
    count: int
    attempts: int


@dataclass
class _Request:
    work: Callable[[_Session, _Request], Any]
    future: Future[Any]
    deadline: float  # monotonic
    retry: bool  # run again after a reconnect (publish); else fail at once when down


#: Returned by a request's work when it completes its future itself, later (fetch waits).
_LATER = object()


@dataclass
class _Wait:
    """A fetch blocked until an idle consumer pushes something or its time runs out."""

    request: _Request
    lanes: set[str]


def _fail(req: _Request, exc: BaseException) -> None:
    if not req.future.done():
        req.future.set_exception(exc)


class _Session:
    """One live connection and its two channels; touched only by the I/O thread.

    `pub` is in confirm mode and also declares queues, so a declaration refused by the
    server (406) closes it and never the channel that holds our deliveries. `sub` gets,
    consumes and acks; its death ends every lease it held, hence a new epoch.
    """

    def __init__(self, conn: BlockingConnection) -> None:
        self.conn = conn
        self.pub = conn.channel()
        self.pub.confirm_delivery()
        self.declared: dict[str, float] = {}  # queue -> when declared (monotonic)
        self.open_sub()

    def open_sub(self) -> None:
        self.sub = self.conn.channel()
        # Per consumer; only idle-wait consumers exist, and one message wakes a fetch.
        self.sub.basic_qos(prefetch_count=1)
        self.epoch = next(_EPOCHS)
        self.held: dict[int, _Held] = {}
        self.pushed: list[tuple[str, Any, Any, bytes]] = []  # (lane, method, props, body)
        self.consumers: dict[str, str] = {}  # consumer tag -> lane
        self.wait: _Wait | None = None

    def repair(self) -> None:
        """Reopen a channel the server closed (a 406 on `pub`, consumer_timeout on `sub`)."""
        if self.pub.is_closed:
            self.declared.clear()
            self.pub = self.conn.channel()
            self.pub.confirm_delivery()
        if self.sub.is_closed:
            # pika keeps the reason only privately; it is worth the log line.
            reason = getattr(self.sub, "_closing_reason", None) or "unknown reason"
            if self.held:
                log.warning(
                    "RabbitMQ closed the consuming channel (%s); its %d deliveries go back "
                    "to their queues and will run again",
                    reason,
                    len(self.held),
                )
            if self.wait is not None:
                self.wait.request.future.set_result(False)
            self.open_sub()

    def holds(self, receipt: Any) -> _Held | None:
        if not isinstance(receipt, tuple) or receipt[0] != self.epoch or self.sub.is_closed:
            return None
        return self.held.get(receipt[1])


class _Link(threading.Thread):
    """The I/O thread: connects, reconnects with back-off, and runs requests in order."""

    def __init__(self, params: pika.URLParameters, where: str, secrets: set[str]) -> None:
        super().__init__(name="soloist-amqp-io", daemon=True)
        self.params = params
        self.where = where  # redacted URL, for messages
        self.secrets = secrets  # the password, scrubbed from any server or library text
        self.requests: stdqueue.SimpleQueue[_Request | None] = stdqueue.SimpleQueue()
        self.pending: list[_Request] = []
        self.session: _Session | None = None
        self.stopping = False
        self.wakeup = threading.Event()
        self.fatal: BrokerUnavailable | None = None

    def describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return scrub(text, self.secrets)

    # -- the caller's side -------------------------------------------------------------

    def call(
        self, work: Callable[[_Session, _Request], T], timeout: float, retry: bool = False
    ) -> T:
        """Run `work` on the I/O thread; raises `_Down` if the connection is not there."""
        if self.fatal is not None:
            raise self.fatal
        req = _Request(work, Future(), time.monotonic() + timeout, retry)
        self.requests.put(req)
        self.wake()
        # The I/O thread answers every request by its deadline (a request already running
        # on a dying connection may take longer); if the thread ended, nobody will.
        while True:
            try:
                result: T = req.future.result(timeout=1.0)
                return result
            except TimeoutError:
                if not self.is_alive() and not req.future.done():
                    raise self.fatal or _Down() from None

    def wake(self) -> None:
        self.wakeup.set()
        session = self.session
        if session is not None:
            # Closing or closed: the loop's tick wakes it anyway.
            with contextlib.suppress(pe.AMQPError, AttributeError):
                session.conn.add_callback_threadsafe(lambda: None)

    def stop(self) -> None:
        self.stopping = True
        self.requests.put(None)
        self.wake()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=10)

    # -- the I/O thread --------------------------------------------------------------------

    def run(self) -> None:
        backoff = _BACKOFF[0]
        connected_once = failing = False
        try:
            while not self.stopping:
                if self.session is None:
                    try:
                        self.session = _Session(BlockingConnection(self.params))
                    except Exception as exc:  # pika raises types outside AMQPError here too
                        if not connected_once:
                            # Wrong host or credentials at start-up: fail fast, don't hang.
                            self.fatal = BrokerUnavailable(
                                f"cannot connect to RabbitMQ at {self.where}: {self.describe(exc)}"
                            )
                            return
                        if not failing:
                            log.warning(
                                "RabbitMQ at %s unreachable (%s); reconnecting with back-off",
                                self.where,
                                self.describe(exc),
                            )
                            failing = True
                        self.pause(backoff)
                        backoff = min(backoff * 2, _BACKOFF[1])
                        continue
                    if failing:
                        log.warning("RabbitMQ at %s: reconnected", self.where)
                    connected_once, failing, backoff = True, False, _BACKOFF[0]
                try:
                    self.serve(self.session)
                except _LOST as exc:
                    if not self.stopping and not failing:
                        log.warning(
                            "RabbitMQ connection to %s lost (%s); unacked deliveries go back "
                            "to their queues; reconnecting",
                            self.where,
                            self.describe(exc),
                        )
                        failing = True
                    self.drop()
        finally:
            self.drop()
            for req in self.take_all():
                _fail(req, self.fatal or _Down())

    def pause(self, seconds: float) -> None:
        """Back off before reconnecting, answering the requests that cannot wait."""
        until = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < until:
            self.expire(down=True)
            self.wakeup.wait(min(until - time.monotonic(), _TICK))
            self.wakeup.clear()

    def take_all(self) -> Iterator[_Request]:
        yield from self.pending
        self.pending = []
        while True:
            try:
                req = self.requests.get_nowait()
            except stdqueue.Empty:
                return
            if req is not None:
                yield req

    def expire(self, down: bool) -> None:
        """Answer requests past their deadline, and (when down) those that cannot wait."""
        now = time.monotonic()
        keep = []
        for req in self.take_all():
            if req.deadline <= now or (down and not req.retry):
                _fail(req, _Down())
            else:
                keep.append(req)
        self.pending = keep

    def serve(self, s: _Session) -> None:
        while not self.stopping:
            self.wakeup.clear()
            for req in self.take_all():
                self.run_one(s, req)
            s.conn.process_data_events(time_limit=_TICK)
            s.repair()
            if s.wait is not None:
                self.check_wait(s, s.wait)

    def run_one(self, s: _Session, req: _Request) -> None:
        if req.deadline <= time.monotonic():
            _fail(req, _Down())
            return
        try:
            result = req.work(s, req)
        except _LOST:
            if req.retry:
                self.pending.append(req)  # once reconnected, unless its deadline passed
            else:
                _fail(req, _Down())
            raise
        except pe.AMQPChannelError as exc:
            if not s.conn.is_open:
                _fail(req, _Down())
                raise pe.ConnectionWrongStateError(str(exc)) from exc
            s.repair()
            _fail(req, self.channel_error(exc))
        except Exception as exc:
            _fail(req, exc)
        else:
            if result is not _LATER:
                req.future.set_result(result)

    def channel_error(self, exc: pe.AMQPChannelError) -> Exception:
        text = self.describe(exc)
        if isinstance(exc, pe.ChannelClosedByBroker) and exc.reply_code == 406:
            # PRECONDITION_FAILED on a declaration: the queue exists with other arguments
            # (another max_deliveries or max_priority, or a classic queue of that name).
            return ConfigurationError(f"RabbitMQ at {self.where} refused: {text}")
        return BrokerUnavailable(f"RabbitMQ at {self.where}: {text}")

    def check_wait(self, s: _Session, wait: _Wait) -> None:
        woken = any(lane in wait.lanes for lane, *_ in s.pushed)
        if not woken and time.monotonic() < wait.request.deadline:
            return
        s.wait = None
        wait.request.future.set_result(woken)

    def drop(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        if session.wait is not None and not session.wait.request.future.done():
            session.wait.request.future.set_result(False)
        try:
            if session.conn.is_open:
                session.conn.close()
        except (pe.AMQPError, OSError):
            pass  # it is going away either way


def _bucket_ms(seconds: float) -> int:
    """`seconds` as whole milliseconds rounded up to two significant digits."""
    ms = max(1, math.ceil(seconds * 1000))
    step = int(10 ** max(0, len(str(ms)) - 2))
    return -(-ms // step) * step


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """(URL for pika, our options) from an amqp:// or amqps:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigurationError(f"not an AMQP URL: {redact(url)}")
    query = parse_qsl(parts.query)
    ours = {k: v for k, v in query if k in _OPTIONS}
    rest = [(k, v) for k, v in query if k not in _OPTIONS]
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


class AMQPBroker(Broker):
    def __init__(self, url: str, max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> None:
        self.url = url
        self.where = redact(url)
        pika_url, options = _split_url(url)
        try:
            self.max_deliveries = int(options.get("max_deliveries", max_deliveries))
            self.max_priority = int(options.get("max_priority", 0))
            self.queue_expires = float(options.get("queue_expires", 0))
            self.publish_timeout = float(options.get("publish_timeout", DEFAULT_PUBLISH_TIMEOUT))
            self.params = pika.URLParameters(pika_url)
        except ValueError as exc:
            raise ConfigurationError(f"bad AMQP URL {self.where}: {exc}") from None
        if self.max_deliveries < 1 or not 0 <= self.max_priority <= 255:
            raise ConfigurationError(f"bad max_deliveries or max_priority in {self.where}")
        self.params.client_properties = {"connection_name": "soloist"}
        if urlsplit(url).scheme == "amqps":
            # Verify the server against the CA the URL names (else the system's CAs).
            context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
            self.params.ssl_options = pika.SSLOptions(context, self.params.host)
        self._secrets = passwords(url)
        self._link: _Link | None = None
        self._link_lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._delay_queues: dict[str, set[str]] = {}  # queue -> delay queues used
        self._beat_ttls: dict[str, float] = {}
        self._warned_priority = False

    # -- plumbing ----------------------------------------------------------------------

    def _call(
        self, work: Callable[[_Session, _Request], T], timeout: float, retry: bool = False
    ) -> T:
        with self._link_lock:
            link = self._link
            if link is None or not link.is_alive():
                link = self._link = _Link(self.params, self.where, self._secrets)
                link.start()
        return link.call(work, timeout, retry)

    def _must(self, work: Callable[[_Session, _Request], T]) -> T:
        """An operator call: wait for a reconnect up to publish_timeout, then give up."""
        try:
            return self._call(work, self.publish_timeout, retry=True)
        except _Down:
            raise BrokerUnavailable(
                f"RabbitMQ at {self.where} unreachable for {self.publish_timeout:.0f}s"
            ) from None

    def lanes(self, queue: str) -> list[str]:
        """The work queues of `queue`, highest priority first."""
        return [self._lane(queue, p) for p in range(self.max_priority, -1, -1)]

    def _lane(self, queue: str, priority: int) -> str:
        if priority and not self.max_priority and not self._warned_priority:
            log.warning("priority ignored: add ?max_priority=N to the AMQP URL to use it")
            self._warned_priority = True
        p = min(max(priority, 0), self.max_priority)
        return queue if p == 0 else f"{queue}.p{p}"

    def _expiring(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.queue_expires:
            args["x-expires"] = int(self.queue_expires * 1000)
        return args

    def _work_args(self, queue: str) -> dict[str, Any]:
        return self._expiring(
            {
                "x-queue-type": "quorum",
                "x-delivery-limit": self.max_deliveries - 1,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": f"{queue}.dead",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }
        )

    def _declare(self, s: _Session, queue: str) -> None:
        """Declare `queue`'s lanes and dead-letter store, once per connection."""
        if queue in s.declared:
            return
        s.pub.queue_declare(
            f"{queue}.dead", durable=True, arguments=self._expiring({"x-queue-type": "quorum"})
        )
        for lane in self.lanes(queue):
            s.pub.queue_declare(lane, durable=True, arguments=self._work_args(queue))
        s.declared[queue] = time.monotonic()

    def _declare_delay(self, s: _Session, queue: str, lane: str, ms: int) -> str:
        name = f"{lane}.delay.{ms}"
        # The queue expires 2*ms + 60 s after its last declaration. Re-declaring when ours
        # is older than ms + 30 s means a message published now expires into its lane
        # (after ms) well before the queue itself can expire.
        if time.monotonic() - s.declared.get(name, -math.inf) > ms / 1000 + 30:
            s.pub.queue_declare(
                name,
                durable=True,
                arguments={
                    "x-message-ttl": ms,
                    "x-expires": 2 * ms + 60_000,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": lane,
                },
            )
            s.declared[name] = time.monotonic()
            self._delay_queues.setdefault(queue, set()).add(name)
        return name

    def _send(
        self,
        s: _Session,
        queue: str,
        lane: str,
        body: bytes,
        message_id: str,
        headers: dict[str, Any],
        delay: float = 0,
    ) -> None:
        """Publish and wait for the confirm; lane is the target queue, reached after
        `delay` through a delay queue."""
        self._declare(s, queue)
        target = lane if delay <= 0 else self._declare_delay(s, queue, lane, _bucket_ms(delay))
        props = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message_id,
            timestamp=int(time.time()),
            headers=headers,
        )
        try:
            s.pub.basic_publish("", target, body, props, mandatory=True)
        except pe.UnroutableError:
            # The queue was deleted (by an operator, or a delay queue expired) after we
            # declared it on this connection: declare again and publish once more.
            s.declared.pop(queue, None)
            s.declared.pop(target, None)
            self._declare(s, queue)
            if delay > 0:
                self._declare_delay(s, queue, lane, _bucket_ms(delay))
            s.pub.basic_publish("", target, body, props, mandatory=True)

    # -- publish and fetch -------------------------------------------------------------

    def publish(self, queue: str, body: bytes, *, delay: float = 0, priority: int = 0) -> str:
        message_id = uuid.uuid4().hex
        lane = self._lane(queue, priority)

        def work(s: _Session, _: _Request) -> None:
            self._send(s, queue, lane, body, message_id, {H_ATTEMPTS: 0}, delay)

        # Retried across reconnects until confirmed: a publish that returns is durable; a
        # connection lost before the confirm may leave a duplicate (at-least-once).
        self._must(work)
        return message_id

    def fetch(
        self, queues: Sequence[str], max_count: int, lease: float, timeout: float
    ) -> list[Delivery]:
        """basic.get over the lanes in order (exact queue and priority order); when all
        are empty, consumers on every lane wait for a push, which wakes the fetch."""
        lanes = [(q, lane) for q in queues for lane in self.lanes(q)]
        deadline = time.monotonic() + max(timeout, 0)
        with self._fetch_lock:
            while True:
                remaining = deadline - time.monotonic()
                try:
                    got = self._call(
                        lambda s, _: self._take(s, lanes, max_count), self.publish_timeout
                    )
                    if got or remaining <= 0:
                        return got
                    if not self._call(lambda s, r: self._wait(s, r, lanes), remaining):
                        return []
                except _Down:
                    # Reconnecting: an idle fetch, not an error; the worker polls again.
                    time.sleep(max(min(deadline - time.monotonic(), _TICK), 0))
                    if time.monotonic() >= deadline:
                        return []

    def _take(self, s: _Session, lanes: list[tuple[str, str]], max_count: int) -> list[Delivery]:
        for q in dict.fromkeys(q for q, _ in lanes):
            self._declare(s, q)
        wanted = {lane for _, lane in lanes}
        if s.consumers:
            s.conn.process_data_events(time_limit=0)  # dispatch pushes already received
            if set(s.consumers.values()) == wanted and not any(p[0] in wanted for p in s.pushed):
                # Still idle: the consumers would have pushed anything waiting (prefetch
                # 1 each), so no basic.get sweep; keep them for the next wait.
                return []
            for tag in list(s.consumers):
                # pika rejects (requeue) what arrives for a consumer being cancelled; the
                # quorum queue counts that as a delivery. The window is one round trip.
                s.sub.basic_cancel(tag)
            s.consumers.clear()
        out: list[Delivery] = []
        order = {lane: i for i, (_, lane) in enumerate(lanes)}
        queue_of = dict((lane, q) for q, lane in lanes)
        s.pushed.sort(key=lambda p: order.get(p[0], len(order)))
        keep = []
        for lane, method, props, body in s.pushed:
            if lane in order and len(out) < max_count:
                self._hand_out(s, out, queue_of[lane], lane, method, props, body)
            else:
                keep.append((lane, method, props, body))
        s.pushed = keep
        for q, lane in lanes:
            while len(out) < max_count:
                method, props, body = s.sub.basic_get(lane)
                if method is None:
                    break
                self._hand_out(s, out, q, lane, method, props, body)
        return out

    def _hand_out(
        self,
        s: _Session,
        out: list[Delivery],
        queue: str,
        lane: str,
        method: Any,
        props: Any,
        body: bytes,
    ) -> None:
        headers = dict(props.headers or {})
        count = int(headers.get("x-delivery-count", 0)) + int(headers.get(H_PRIOR, 0)) + 1
        attempts = int(headers.get(H_ATTEMPTS, 0))
        for name in _SERVER_HEADERS:
            headers.pop(name, None)
        message_id = props.message_id or uuid.uuid4().hex
        tag = method.delivery_tag
        s.held[tag] = _Held(queue, lane, message_id, headers, count, attempts)
        if count > self.max_deliveries:
            # Only a released copy gets here (the queue's own limit counts from the copy).
            self._move(s, tag, f"{queue}.dead", body, self._dead_headers(s.held[tag], count))
            return
        out.append(Delivery(message_id, queue, body, count, attempts, (s.epoch, tag)))

    def _wait(self, s: _Session, req: _Request, lanes: list[tuple[str, str]]) -> object:
        if not s.consumers:
            for _, lane in lanes:

                def pushed(
                    _ch: BlockingChannel, method: Any, props: Any, body: bytes, lane: str = lane
                ) -> None:
                    s.pushed.append((lane, method, props, body))

                tag = s.sub.basic_consume(lane, pushed)
                s.consumers[tag] = lane
        s.wait = _Wait(req, {lane for _, lane in lanes})
        return _LATER

    # -- settling ----------------------------------------------------------------------

    def _settle(self, delivery: Delivery, work: Callable[[_Session, _Held, int], None]) -> bool:
        def run(s: _Session, _: _Request) -> bool:
            held = s.holds(delivery.receipt)
            if held is None:
                return False
            work(s, held, delivery.receipt[1])
            return True

        try:
            return self._call(run, self.publish_timeout)
        except (_Down, BrokerUnavailable):
            return False  # its channel died with the connection: someone else gets it

    def _ack(self, s: _Session, tag: int) -> None:
        s.sub.basic_ack(tag)
        s.held.pop(tag, None)
        # AMQP acks have no reply. A synchronous call behind it on the same channel returns
        # only after the server processed the ack; if the server had closed the channel
        # (consumer_timeout), this raises and the settle reports False.
        s.sub.basic_qos(prefetch_count=1)

    def _move(
        self,
        s: _Session,
        tag: int,
        target: str,
        body: bytes,
        headers: dict[str, Any],
        delay: float = 0,
    ) -> None:
        """Publish a copy (confirmed), then ack the original: never lost, at worst twice."""
        held = s.held[tag]
        try:
            self._send(s, held.queue, target, body, held.message_id, headers, delay)
        except pe.AMQPChannelError:
            # The copy was refused: give the original back rather than sit on it.
            if s.sub.is_open:
                s.sub.basic_reject(tag, requeue=True)
                s.held.pop(tag, None)
            raise
        self._ack(s, tag)

    def ack(self, delivery: Delivery) -> bool:
        return self._settle(delivery, lambda s, held, tag: self._ack(s, tag))

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """One hop to the I/O thread, and one basic.qos behind all the acks."""

        def run(s: _Session, _: _Request) -> list[bool]:
            acked = []
            for d in deliveries:
                held = s.holds(d.receipt) is not None
                if held:
                    s.sub.basic_ack(d.receipt[1])
                    s.held.pop(d.receipt[1], None)
                acked.append(held)
            if any(acked):
                s.sub.basic_qos(prefetch_count=1)  # see _ack
            return acked

        try:
            return self._call(run, self.publish_timeout)
        except (_Down, BrokerUnavailable):
            return [False] * len(deliveries)

    def retry(self, delivery: Delivery, delay: float) -> bool:
        def work(s: _Session, held: _Held, tag: int) -> None:
            headers = {**held.headers, H_ATTEMPTS: held.attempts + 1, H_PRIOR: 0}
            self._move(s, tag, held.lane, delivery.body, headers, delay=delay)

        return self._settle(delivery, work)

    def _dead_headers(self, held: _Held, count: int, reason: str = "") -> dict[str, Any]:
        return {
            **held.headers,
            H_REASON: reason or poison_reason(count - 1),
            H_DEAD_AT: repr(time.time()),
            H_COUNT: count,
            H_ATTEMPTS: held.attempts,
        }

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        def work(s: _Session, held: _Held, tag: int) -> None:
            headers = self._dead_headers(held, held.count, reason)
            self._move(s, tag, f"{held.queue}.dead", delivery.body, headers)

        return self._settle(delivery, work)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Publish a copy that carries the count so far, then ack: a basic.nack would
        raise the quorum queue's delivery count. The copy goes to the back of its lane."""
        for d in deliveries:

            def work(s: _Session, held: _Held, tag: int, d: Delivery = d) -> None:
                headers = {**held.headers, H_PRIOR: held.count - 1}
                self._move(s, tag, held.lane, d.body, headers)

            self._settle(d, work)

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[Delivery]:
        """A liveness check: the lease lasts as long as the channel; `lease` is unused."""
        try:
            return self._call(
                lambda s, _: [d for d in deliveries if s.holds(d.receipt) is None],
                self.publish_timeout,
            )
        except (_Down, BrokerUnavailable):
            return list(deliveries)

    # -- operators ---------------------------------------------------------------------

    @contextmanager
    def _admin(self, s: _Session) -> Iterator[BlockingChannel]:
        """A short-lived channel: closing it returns whatever basic.get took and did not
        ack, and a 404 on it harms nothing else."""
        ch = s.conn.channel()
        try:
            yield ch
        finally:
            if ch.is_open:
                ch.close()

    def _count(self, s: _Session, names: Sequence[str], purge: bool = False) -> int:
        """Ready messages in the named queues (purged if asked); missing queues count 0."""
        total = 0
        for name in names:
            with self._admin(s) as ch:
                try:
                    ok = ch.queue_declare(name, passive=True)
                    total += int(
                        ch.queue_purge(name).method.message_count
                        if purge
                        else ok.method.message_count
                    )
                except pe.ChannelClosedByBroker as exc:
                    if exc.reply_code != 404:
                        raise
                    for delays in self._delay_queues.values():
                        delays.discard(name)  # an expired delay queue
        return total

    def _delays(self, queue: str) -> list[str]:
        return sorted(self._delay_queues.get(queue, ()))

    def depth(self, queue: str) -> int:
        """Ready messages in the lanes, plus those waiting in the delay queues this process
        used (AMQP 0-9-1 cannot list queues, so another process's delays are not seen)."""
        return self._must(lambda s, _: self._count(s, self.lanes(queue) + self._delays(queue)))

    def stats(self, queue: str) -> QueueStats:
        """In-flight is None: AMQP reports a queue's ready messages, not its unacked ones."""

        def work(s: _Session, _: _Request) -> QueueStats:
            delayed = self._count(s, self._delays(queue))
            ready = self._count(s, self.lanes(queue))
            return QueueStats(ready + delayed, delayed, None, self._count(s, [f"{queue}.dead"]))

        return self._must(work)

    def purge(self, queue: str) -> int:
        return self._must(
            lambda s, _: self._count(s, self.lanes(queue) + self._delays(queue), purge=True)
        )

    def delete(self, queue: str) -> None:
        """Delete `queue`'s lanes, dead letters and known delay queues, messages and all."""

        def work(s: _Session, _: _Request) -> None:
            names = [*self.lanes(queue), f"{queue}.dead", *self._delay_queues.pop(queue, ())]
            with self._admin(s) as ch:
                for name in names:
                    ch.queue_delete(name)  # a missing queue is no error
                    s.declared.pop(name, None)
            s.declared.pop(queue, None)

        self._must(work)

    @contextmanager
    def _locked(self, s: _Session, name: str) -> Iterator[BlockingChannel]:
        """An admin channel, with the cross-process lock of `name` held (see the top)."""
        lock, deadline = f"{name}.lock", time.monotonic() + self.publish_timeout
        while True:
            with self._admin(s) as ch:
                try:
                    ch.queue_declare(lock, exclusive=True)
                except pe.ChannelClosedByBroker as exc:
                    # 405 RESOURCE_LOCKED: another connection holds it.
                    if exc.reply_code != 405 or time.monotonic() > deadline:
                        raise
                else:
                    try:
                        yield ch
                        # Give back what was browsed and not acked while still holding the
                        # lock, or the next holder may not see it; the synchronous qos
                        # returns once the server has handled the acks and the nack.
                        ch.basic_nack(delivery_tag=0, multiple=True, requeue=True)
                        ch.basic_qos(prefetch_count=0)
                    finally:
                        # The lock lives as long as our connection: always delete it.
                        if ch.is_open:
                            ch.queue_delete(lock)
                        else:
                            with self._admin(s) as spare:
                                spare.queue_delete(lock)
                    return
            s.conn.process_data_events(time_limit=0.02)  # keep heartbeats going meanwhile

    def _browse(
        self, ch: BlockingChannel, name: str, limit: int
    ) -> Iterator[tuple[int, Any, bytes]]:
        """basic.get up to `limit` messages; `_locked` returns those not acked."""
        for _ in range(limit):
            method, props, body = ch.basic_get(name)
            if method is None:
                return
            yield method.delivery_tag, props, body

    def _dead_letter(self, queue: str, props: Any, body: bytes) -> DeadLetter:
        h = props.headers or {}
        reason = h.get(H_REASON)
        count = int(h.get(H_COUNT, 0))
        if reason is None:  # dead-lettered by the queue itself: its delivery limit
            count = int(h.get(H_PRIOR, 0)) + self.max_deliveries
            reason = poison_reason(count)
            deaths = h.get("x-death") or [{}]
            dead_at = deaths[0]["time"].timestamp() if "time" in deaths[0] else 0.0
        else:
            dead_at = float(h.get(H_DEAD_AT, 0))
        return DeadLetter(
            props.message_id or "",
            queue,
            body,
            str(reason),
            count,
            int(h.get(H_ATTEMPTS, 0)),
            dead_at,
        )

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        def work(s: _Session, _: _Request) -> list[DeadLetter]:
            self._declare(s, queue)
            with self._locked(s, f"{queue}.dead") as ch:
                return [
                    self._dead_letter(queue, props, body)
                    for _, props, body in self._browse(ch, f"{queue}.dead", limit)
                ]

        return self._must(work)

    def _pick_dead(
        self, queue: str, ids: Sequence[str] | None, requeue: bool
    ) -> Callable[[_Session, _Request], int]:
        wanted = None if ids is None else set(ids)

        def work(s: _Session, _: _Request) -> int:
            self._declare(s, queue)
            done = 0
            with self._locked(s, f"{queue}.dead") as ch:
                for tag, props, body in self._browse(ch, f"{queue}.dead", 1_000_000):
                    if wanted is not None and props.message_id not in wanted:
                        continue  # goes back to the store when the lock is released
                    if requeue:
                        headers = {
                            k: v for k, v in (props.headers or {}).items() if not k.startswith("x-")
                        }
                        headers[H_ATTEMPTS] = 0
                        self._send(s, queue, queue, body, props.message_id or "", headers)
                    ch.basic_ack(tag)
                    done += 1
            return done

        return work

    def requeue_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return self._must(self._pick_dead(queue, ids, requeue=True))

    def drop_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return self._must(self._pick_dead(queue, ids, requeue=False))

    # -- liveness ----------------------------------------------------------------------

    def _declare_workers(self, s: _Session) -> None:
        if WORKERS_QUEUE not in s.declared:
            s.pub.queue_declare(WORKERS_QUEUE, durable=False)
            s.declared[WORKERS_QUEUE] = time.monotonic()

    def _beat(self, worker_id: str, info: bytes, ttl: float, gone: bool = False) -> None:
        headers = {
            H_WORKER: worker_id,
            H_SEEN: repr(time.time()),
            H_TTL: repr(ttl),
            H_GONE: int(gone),
        }
        props = pika.BasicProperties(
            message_id=worker_id, expiration=str(max(1, int(ttl * 1000))), headers=headers
        )

        def work(s: _Session, _: _Request) -> None:
            self._declare_workers(s)
            s.pub.basic_publish("", WORKERS_QUEUE, info, props, mandatory=True)

        self._must(work)

    def heartbeat(self, worker_id: str, info: bytes, ttl: float) -> None:
        self._beat_ttls[worker_id] = ttl
        self._beat(worker_id, info, ttl)

    def forget_worker(self, worker_id: str) -> None:
        # Messages cannot be deleted from the middle of a queue: a newer tombstone hides
        # the older heartbeats until `workers()` drops them or they expire.
        self._beat(worker_id, b"", self._beat_ttls.pop(worker_id, _TOMBSTONE_TTL), gone=True)

    def workers(self) -> dict[str, tuple[bytes, float]]:
        def work(s: _Session, _: _Request) -> dict[str, tuple[bytes, float]]:
            self._declare_workers(s)
            newest: dict[str, tuple[float, int, Any, bytes]] = {}
            with self._locked(s, WORKERS_QUEUE) as ch:
                for tag, props, body in self._browse(ch, WORKERS_QUEUE, 100_000):
                    h = props.headers or {}
                    wid, seen = str(h.get(H_WORKER, "")), float(h.get(H_SEEN, 0))
                    old = newest.get(wid)
                    if old is not None and old[0] > seen:
                        ch.basic_ack(tag)  # superseded: compact the queue
                        continue
                    if old is not None:
                        ch.basic_ack(old[1])
                    newest[wid] = (seen, tag, h, body)
                now = time.time()
                alive = {}
                for wid, (seen, tag, h, body) in newest.items():
                    if h.get(H_GONE) or seen + float(h.get(H_TTL, 0)) < now:
                        ch.basic_ack(tag)
                    else:
                        alive[wid] = (body, seen)
            return alive

        return self._must(work)

    def close(self) -> None:
        """Close the connection; the server returns unacked deliveries (counted by the
        quorum queue, as for a dead worker). A later call connects again."""
        with self._link_lock:
            link, self._link = self._link, None
        if link is not None:
            link.stop()
