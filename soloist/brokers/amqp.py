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
`extend` is a liveness check and `lease` values are not used; a lost run (`abandon`) is
given back at once as a copy with the count raised. The receipt is (channel
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
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import pika
import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from ..errors import BrokerUnavailable, ConfigurationError
from ..urls import passwords, redact, scrub
from .base import (
    DEFAULT_MAX_DELIVERIES,
    AckPipe,
    Broker,
    DeadLetter,
    Delivery,
    QueueStats,
    poison_reason,
    positive_int,
    seconds,
    url_options,
)

log = logging.getLogger("soloist.brokers.amqp")

T = TypeVar("T")

#: Our headers. Counts live in headers because a retried or released message is a new
#: AMQP message, whose quorum `x-delivery-count` starts again at 0.
H_RETRIES = "x-soloist-retries"
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
_SERVER_HEADERS = frozenset(
    {
        "x-delivery-count",
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
    }
)
WORKERS_QUEUE = "soloist.workers"
def _priority(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 255:
        raise ValueError("must be 0 to 255")
    return number


#: URL query options of ours; the rest go to pika.URLParameters (heartbeat, …).
OPTIONS: dict[str, Callable[[str], Any]] = {
    "max_deliveries": positive_int,
    "max_priority": _priority,
    "queue_expires": seconds,
    "publish_timeout": seconds,
    "ssl_ca_certs": str,
}
#: How long `publish` and operator calls wait for a lost connection to come back.
DEFAULT_PUBLISH_TIMEOUT = 30.0
#: The I/O thread wakes at least this often when nothing happens.
_TICK = 0.2
#: A caller that fetches again within this many seconds drains its batches this fast, so
#: the lane's consumer may run one batch ahead of it (`AMQPBroker._stream`); the worker's
#: adaptive prefetch holds about as much work (PREFETCH_HORIZON).
_AHEAD = 0.05
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


@dataclass(slots=True)
class _Held:
    """What the I/O thread remembers of a delivery it handed out (`headers` as received)."""

    queue: str
    lane: str
    message_id: str
    headers: dict[str, Any]
    count: int
    retries: int

    def copy_headers(self, changes: dict[str, Any]) -> dict[str, Any]:
        """The headers of a copy we publish: ours, with `changes`, not the server's."""
        ours = {k: v for k, v in self.headers.items() if k not in _SERVER_HEADERS}
        return {**ours, **changes}


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
    """A fetch blocked until `ready()` (a consumer pushed something for it) or `until`
    (monotonic); then the I/O thread runs its request again, which answers it."""

    request: _Request
    until: float
    ready: Callable[[], bool]


class _Out(NamedTuple):
    """A message to publish: `lane` is its work queue, reached after `delay` seconds."""

    queue: str
    lane: str
    body: bytes
    message_id: str
    headers: dict[str, Any]
    delay: float = 0


@dataclass
class _Stream:
    """The consumer that feeds fetches of one lane, and what it pushed that no fetch took.

    Its prefetch (basic.qos, per consumer) follows the fetches' max_count. RabbitMQ
    applies a qos only to consumers started after it, so a new prefetch means a new
    consumer (`AMQPBroker._resize`); one consumer at a time, because a quorum queue
    interleaves its messages across several consumers out of order.
    """

    queue: str
    lane: str
    prefetch: int = 0
    tag: str | None = None  # None once cancelled: only its buffer is left to hand out
    buffer: deque[tuple[Any, Any, bytes]] = field(default_factory=deque)  # method, props, body
    mine: set[int] = field(default_factory=set)  # the consumer's tags, buffered or handed out
    resize: int = 0  # the prefetch fetches asked for since; 0 when it is right
    keep: int = 0  # on shrinking, how many buffered messages to keep (the last count)
    fetched: float = -math.inf  # when a fetch last came (monotonic)

    def full(self) -> bool:
        """The server has no room to push more, so nothing can be in flight."""
        return len(self.mine) >= self.prefetch


def _fail(req: _Request, exc: BaseException) -> None:
    if not req.future.done():
        req.future.set_exception(exc)


class _Session:
    """One live connection and its channels; touched only by the I/O thread.

    `pub` is in confirm mode and also declares queues, so a declaration refused by the
    server (406) closes it and never the channel that holds our deliveries. `tx` publishes
    batches in one transaction (its commit-ok, like a confirm, waits for the queues).
    `sub` gets, consumes and acks; its death ends every lease it held, hence a new epoch.
    """

    def __init__(self, conn: BlockingConnection) -> None:
        self.conn = conn
        self.pub = conn.channel()
        self.pub.confirm_delivery()
        self.tx: BlockingChannel | None = None
        self.returned: set[str] = set()  # message ids the server returned from `tx`
        self.declared: dict[str, float] = {}  # queue -> when declared (monotonic)
        self.open_sub()

    def open_sub(self) -> None:
        self.sub = self.conn.channel()
        self.epoch = next(_EPOCHS)
        self.held: dict[int, _Held] = {}
        self.pushed: list[tuple[str, Any, Any, bytes]] = []  # (lane, method, props, body)
        self.consumers: dict[str, str] = {}  # idle-wait consumer tag -> lane
        self.stream: _Stream | None = None
        self.wait: _Wait | None = None

    def transacting(self) -> BlockingChannel:
        if self.tx is None:
            self.tx = self.conn.channel()
            self.tx.tx_select()
            returned = self.returned
            self.tx.add_on_return_callback(lambda _c, _m, props, _b: returned.add(props.message_id))
        return self.tx

    def repair(self) -> None:
        """Reopen a channel the server closed (a 406 on `pub`, consumer_timeout on `sub`)."""
        if self.pub.is_closed:
            self.declared.clear()
            self.pub = self.conn.channel()
            self.pub.confirm_delivery()
        if self.tx is not None and self.tx.is_closed:
            self.tx = None
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
            self.end_wait()
            self.open_sub()

    def end_wait(self) -> None:
        """Answer a waiting fetch with nothing (its channel or consumer is going)."""
        wait, self.wait = self.wait, None
        if wait is not None and not wait.request.future.done():
            wait.request.future.set_result([])

    def holds(self, receipt: Any) -> _Held | None:
        if not isinstance(receipt, tuple) or receipt[0] != self.epoch or self.sub.is_closed:
            return None
        return self.held.get(receipt[1])

    def settled(self, tag: int) -> None:
        self.held.pop(tag, None)
        if self.stream is not None:
            self.stream.mine.discard(tag)

    def unsettled(self) -> Iterator[int]:
        """Every delivery tag on `sub` not acked yet: handed out, or pushed and kept here."""
        yield from self.held
        if self.stream is not None:
            yield from (method.delivery_tag for method, _, _ in self.stream.buffer)
        yield from (method.delivery_tag for _, method, _, _ in self.pushed)


def _os_error(exc: BaseException) -> OSError | None:
    """The socket error under pika's connection errors (kept in their args or their
    `exception` attribute, not as a cause)."""
    todo, seen = [exc], 0
    while todo and seen < 20:
        error, seen = todo.pop(), seen + 1
        if isinstance(error, OSError):
            return error
        inner = [*error.args, getattr(error, "exception", None), error.__cause__]
        todo += [e for e in inner if isinstance(e, BaseException)]
    return None


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
        cause = _os_error(exc)
        if cause is not None:  # "connection refused (host:port)", not pika's wrapper's name
            why = (cause.strerror or type(cause).__name__).lower()
            return f"{why} ({self.params.host}:{self.params.port})"
        text = f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)
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

    def run_one(self, s: _Session, req: _Request, waited: bool = False) -> None:
        if req.deadline <= time.monotonic() and not waited:
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
        if wait.ready() or time.monotonic() >= wait.until:
            s.wait = None
            self.run_one(s, wait.request, waited=True)

    def drop(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        session.end_wait()
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


class AMQPBroker(Broker):
    def __init__(self, url: str, max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> None:
        self.url = url
        self.where = redact(url)
        if urlsplit(url).scheme not in ("amqp", "amqps"):
            raise ConfigurationError(f"not an AMQP URL: {self.where}")
        pika_url, options = url_options(url, OPTIONS, others=True)
        self.max_deliveries = options.get("max_deliveries", max_deliveries)
        self.max_priority = options.get("max_priority", 0)
        self.queue_expires = options.get("queue_expires", 0.0)
        self.publish_timeout = options.get("publish_timeout", DEFAULT_PUBLISH_TIMEOUT)
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

    def _target(self, s: _Session, out: _Out) -> str:
        """The queue to publish `out` to: its lane, or a delay queue in front of it."""
        self._declare(s, out.queue)
        if out.delay <= 0:
            return out.lane
        return self._declare_delay(s, out.queue, out.lane, _bucket_ms(out.delay))

    @staticmethod
    def _props(out: _Out) -> pika.BasicProperties:
        return pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=out.message_id,
            timestamp=int(time.time()),
            # None, not an empty table, for a new message: a missing count reads as 0, and
            # consumers then decode no header table.
            headers=out.headers or None,
        )

    def _send(self, s: _Session, out: _Out) -> None:
        """Publish and wait for the confirm."""
        target = self._target(s, out)
        try:
            s.pub.basic_publish("", target, out.body, self._props(out), mandatory=True)
        except pe.UnroutableError:
            # The queue was deleted (by an operator, or a delay queue expired) after we
            # declared it on this connection: declare again and publish once more.
            s.declared.pop(out.queue, None)
            s.declared.pop(target, None)
            s.pub.basic_publish(
                "", self._target(s, out), out.body, self._props(out), mandatory=True
            )

    def _send_many(self, s: _Session, outs: Sequence[_Out]) -> None:
        """Publish in one transaction: one round trip for the batch, durable once the
        commit returns (RabbitMQ answers a commit once the queues confirmed every message)."""
        if len(outs) == 1:
            self._send(s, outs[0])
            return
        targets = [self._target(s, out) for out in outs]
        tx = s.transacting()
        s.returned.clear()
        for out, target in zip(outs, targets, strict=True):
            tx.basic_publish("", target, out.body, self._props(out), mandatory=True)
        tx.tx_commit()
        # A queue deleted since we declared it returns the message, before the commit-ok;
        # this dispatches those returns. _send declares it again.
        s.conn.process_data_events(time_limit=0)
        for out in outs:
            if out.message_id in s.returned:
                self._send(s, out)

    # -- publish and fetch -------------------------------------------------------------

    def publish(self, queue: str, body: bytes, *, delay: float = 0, priority: int = 0) -> str:
        out = _Out(queue, self._lane(queue, priority), body, uuid.uuid4().hex, {}, delay)
        # Retried across reconnects until confirmed: a publish that returns is durable; a
        # connection lost before the confirm may leave a duplicate (at-least-once).
        self._must(lambda s, _: self._send(s, out))
        return out.message_id

    def publish_many(self, items: Sequence[tuple[str, bytes, float, int]]) -> list[str]:
        """One transaction for the whole batch (retried whole across reconnects)."""
        outs = [
            _Out(q, self._lane(q, p), body, uuid.uuid4().hex, {}, delay)
            for q, body, delay, p in items
        ]
        if outs:
            self._must(lambda s, _: self._send_many(s, outs))
        return [out.message_id for out in outs]

    def fetch(
        self, queues: Sequence[str], max_count: int, lease: float, timeout: float
    ) -> list[Delivery]:
        """One lane (one queue, no priorities): a consumer streams it (`_stream`). Several:
        basic.get over the lanes in order (`_sweep`), for exact queue and priority order."""
        lanes = [(q, lane) for q in queues for lane in self.lanes(q)]
        until = time.monotonic() + max(timeout, 0)
        count = max(max_count, 1)

        def work(s: _Session, req: _Request) -> Any:  # a list of deliveries, or _LATER
            if len(lanes) == 1:
                return self._stream(s, req, *lanes[0], count, until)
            return self._sweep(s, req, lanes, count, until)

        with self._fetch_lock:
            while True:
                try:
                    got: list[Delivery] = self._call(work, self.publish_timeout)
                    return got
                except _Down:
                    # Reconnecting: an idle fetch, not an error; the worker polls again.
                    time.sleep(max(min(until - time.monotonic(), _TICK), 0))
                    if time.monotonic() >= until:
                        return []

    def _stream(
        self, s: _Session, req: _Request, queue: str, lane: str, count: int, until: float
    ) -> object:
        """Hand out what the lane's consumer pushed, up to `count`, or wait for a push.

        With no consumer yet, the batch is taken by basic.get (exact: whatever is ready,
        up to `count`, as on several lanes), and one is started for the next batches (or
        to wait on), unless the lane was empty and the caller does not wait.

        Its prefetch follows `count` plus what the caller still holds (a pool fetches for
        its free slots while tasks run), plus `count` again when the caller asks for more
        than one and came back within _AHEAD seconds: then the server pushes the next
        batch while this one runs, instead of after its acks (a round trip and the quorum
        queue's commit, during which the caller would wait, or a burst worker would think
        the lane empty). A slow caller, or one taking one at a time (`--prefetch 1`), gets
        no more than it asks for. A different prefetch (more, or at most half) is applied
        at the next settle, by `_resize`."""
        self._end_waits(s)
        st = s.stream
        if st is not None and st.lane != lane:
            self._end_stream(s)
            st = None
        s.conn.process_data_events(time_limit=0)  # dispatch pushes already received
        if st is not None and st.tag is not None and st.tag not in s.sub.consumer_tags:
            # The server cancelled it: its queue was deleted. Declare it again.
            st.tag = None
            s.declared.pop(queue, None)
        self._declare(s, queue)
        if st is None:
            st = s.stream = _Stream(queue, lane)
        now = time.monotonic()
        ahead = count if count > 1 and now - st.fetched < _AHEAD else 0
        want = count + len(s.held) + ahead
        st.fetched = now
        out: list[Delivery] = []
        if st.tag is None:
            if not st.buffer:  # else it ended: hand out what it had, then start afresh
                self._get(s, out, queue, lane, count)
                if not out and time.monotonic() >= until:
                    return out  # nothing ready, and no wait: no consumer needed yet
                self._consume(s, st, want)
        elif want > st.prefetch or want <= st.prefetch // 2:
            st.resize, st.keep = want, count
            if want > st.prefetch and st.full():
                self._resize(s)  # nothing in flight, and the caller waits for more
        else:
            st.resize = 0
        while st.buffer and len(out) < count:
            self._hand_out(s, out, queue, lane, *st.buffer.popleft())
        if not out and time.monotonic() >= until and st.tag is not None and not st.full():
            # Not waiting: still, what the server already pushed (say, the refill after
            # the last acks) is in flight. One round trip on this channel lets it land.
            self._confirm_acks(s)
            s.conn.process_data_events(time_limit=0)
            while st.buffer and len(out) < count:
                self._hand_out(s, out, queue, lane, *st.buffer.popleft())
        if out or time.monotonic() >= until:
            return out
        s.wait = _Wait(req, until, lambda: bool(st.buffer))
        return _LATER

    def _consume(self, s: _Session, st: _Stream, prefetch: int) -> None:
        mine = st.mine = set()

        def pushed(_ch: BlockingChannel, method: Any, props: Any, body: bytes) -> None:
            st.buffer.append((method, props, body))
            mine.add(method.delivery_tag)

        s.sub.basic_qos(prefetch_count=prefetch)  # applies to the consumer started next
        st.tag = s.sub.basic_consume(st.lane, pushed)
        st.prefetch, st.resize = prefetch, 0

    def _resize(self, s: _Session) -> None:
        """Before a settle, give the stream the prefetch its fetches asked for: cancel the
        consumer and start one with the new prefetch. Its buffer is handed out first,
        so the lane's order holds; on shrinking, what it holds beyond the last fetch's
        count goes back, so a worker that slowed down does not sit on messages others
        could run.

        Here rather than at the fetch: the acks that follow make room that the server
        fills at once, and a delivery in flight when a consumer is cancelled is rejected
        by pika and counted by the queue. Before the acks, the consumer is full when the
        lane is busy (nothing in flight). Growing waits for that (below it, the lane is
        drained and a larger prefetch would not help); shrinking does not wait."""
        st = s.stream
        if st is None or not st.resize or st.tag is None:
            return
        want, growing = st.resize, st.resize > st.prefetch
        if growing and not st.full():
            return
        self._cancel(s, st)
        excess = [] if growing else [self._kept(st, e) for e in list(st.buffer)[st.keep :]]
        for _ in excess:
            st.buffer.pop()
        self._consume(s, st, want)
        self._give_back(s, excess)

    def _kept(self, st: _Stream, entry: tuple[Any, Any, bytes]) -> tuple[int, _Held, bytes]:
        method, props, body = entry
        return method.delivery_tag, self._held(st.queue, st.lane, props), body

    def _cancel(self, s: _Session, st: _Stream) -> None:
        """Stop the stream's consumer. pika rejects (requeue) what reaches a consumer
        being cancelled, and the quorum queue counts that as a delivery: unless the
        stream is full, a message published within this round trip may come back with
        its delivery count raised by one."""
        # (Deleting its queue cancels a consumer too.)
        if st.tag is not None and s.sub.is_open and st.tag in s.sub.consumer_tags:
            s.conn.process_data_events(time_limit=0)  # into the buffer, not rejected
            s.sub.basic_cancel(st.tag)
        st.tag = None

    def _end_stream(self, s: _Session) -> None:
        """Cancel the stream and give back what it pushed that no fetch took."""
        st = s.stream
        if st is None:
            return
        s.end_wait()
        self._cancel(s, st)
        kept = [self._kept(st, entry) for entry in st.buffer]
        st.buffer.clear()
        s.stream = None
        self._give_back(s, kept)

    def _end_waits(self, s: _Session) -> None:
        """Cancel the idle-wait consumers of `_sweep` and give back what they pushed."""
        if not s.consumers and not s.pushed:
            return
        s.conn.process_data_events(time_limit=0)
        self._cancel_waits(s)
        queue_of = {lane: queue for queue in s.declared for lane in self.lanes(queue)}
        pushed, s.pushed = s.pushed, []
        self._give_back(
            s,
            [
                (method.delivery_tag, self._held(queue_of.get(lane, lane), lane, props), body)
                for lane, method, props, body in pushed
            ],
        )

    def _cancel_waits(self, s: _Session) -> None:
        """Cancel the idle-wait consumers; what they pushed stays in `s.pushed`. (pika
        rejects what reaches a consumer being cancelled: the window of `_cancel`.)"""
        for tag in list(s.consumers):
            s.sub.basic_cancel(tag)
        s.consumers.clear()

    def _give_back(
        self, s: _Session, kept: Sequence[tuple[int, _Held, bytes]], counted: bool = False
    ) -> None:
        """Put deliveries back unstarted, as if never delivered: publish copies that carry
        the count so far, then ack the originals (a basic.nack would raise the quorum
        queue's count, and a message given back often would look like poison). The
        copies go to the back of their lanes. `counted`: a lost run, whose delivery counts
        (a copy handed out past max_deliveries is dead-lettered by `_hand_out`)."""
        if not kept:
            return
        self._send_many(
            s,
            [
                _Out(
                    h.queue,
                    h.lane,
                    body,
                    h.message_id,
                    h.copy_headers({H_PRIOR: h.count - 1 + counted}),
                )
                for _, h, body in kept
            ],
        )
        self._ack_tags(s, [tag for tag, _, _ in kept])

    def _sweep(
        self,
        s: _Session,
        req: _Request,
        lanes: list[tuple[str, str]],
        count: int,
        until: float,
    ) -> object:
        """basic.get over the lanes in order; when all are empty, wait for a push."""
        self._end_stream(s)
        got = self._take(s, lanes, count)
        if got or time.monotonic() >= until:
            return got
        return self._wait(s, req, lanes, until)

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
            self._cancel_waits(s)
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
            self._get(s, out, q, lane, max_count)
        return out

    def _get(self, s: _Session, out: list[Delivery], queue: str, lane: str, count: int) -> None:
        """basic.get from `lane` into `out` until it holds `count` or the lane is empty."""
        while len(out) < count:
            method, props, body = s.sub.basic_get(lane)
            if method is None:
                return
            self._hand_out(s, out, queue, lane, method, props, body)

    def _held(self, queue: str, lane: str, props: Any) -> _Held:
        headers = props.headers or {}
        count = int(headers.get("x-delivery-count", 0)) + int(headers.get(H_PRIOR, 0)) + 1
        retries = int(headers.get(H_RETRIES, 0))
        return _Held(queue, lane, props.message_id or uuid.uuid4().hex, headers, count, retries)

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
        tag = method.delivery_tag
        held = s.held[tag] = self._held(queue, lane, props)
        if held.count > self.max_deliveries:
            # Only a released copy gets here (the queue's own limit counts from the copy).
            self._move(s, tag, f"{queue}.dead", body, self._dead_headers(held, held.count))
            return
        out.append(Delivery(held.message_id, queue, body, held.count, held.retries, (s.epoch, tag)))

    def _wait(
        self, s: _Session, req: _Request, lanes: list[tuple[str, str]], until: float
    ) -> object:
        """Consumers on every lane (prefetch 1 each); a push runs the fetch again."""
        if not s.consumers:
            s.sub.basic_qos(prefetch_count=1)  # applies to the consumers started next
            for _, lane in lanes:

                def pushed(
                    _ch: BlockingChannel, method: Any, props: Any, body: bytes, lane: str = lane
                ) -> None:
                    s.pushed.append((lane, method, props, body))

                tag = s.sub.basic_consume(lane, pushed)
                s.consumers[tag] = lane
        wanted = {lane for _, lane in lanes}
        s.wait = _Wait(req, until, lambda: any(p[0] in wanted for p in s.pushed))
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

    def _ack_tags(self, s: _Session, tags: Sequence[int]) -> None:
        """basic.ack each tag, with one multiple-ack for those below every other unsettled
        tag on the channel (in a worker's batch, usually all of them). Every ack goes
        through here, so a stream waiting for a new prefetch gets it first."""
        self._resize(s)
        for tag in tags:
            s.settled(tag)
        low = min(s.unsettled(), default=math.inf)
        ordered = sorted(tags)
        below = [tag for tag in ordered if tag < low]
        if len(below) > 1:
            s.sub.basic_ack(below[-1], multiple=True)
            ordered = ordered[len(below) :]
        for tag in ordered:
            s.sub.basic_ack(tag)

    def _confirm_acks(self, s: _Session) -> None:
        """AMQP acks have no reply. A synchronous call behind them on the same channel
        returns only after the server processed them; if the server had closed the
        channel (consumer_timeout), this raises and the settle reports False. (basic.qos
        sets the prefetch of consumers started later; each consume sets its own.)"""
        s.sub.basic_qos(prefetch_count=1)

    def _ack(self, s: _Session, tag: int) -> None:
        self._ack_tags(s, [tag])
        self._confirm_acks(s)

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
            self._send(s, _Out(held.queue, target, body, held.message_id, headers, delay))
        except pe.AMQPChannelError:
            # The copy was refused: give the original back rather than sit on it.
            if s.sub.is_open:
                s.sub.basic_reject(tag, requeue=True)
                s.settled(tag)
            raise
        self._ack(s, tag)

    def ack(self, delivery: Delivery) -> bool:
        return self._settle(delivery, lambda s, held, tag: self._ack(s, tag))

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """One hop to the I/O thread, one multiple-ack where the tags allow it, and one
        round trip to learn that the server processed them."""

        def run(s: _Session, _: _Request) -> list[bool]:
            held = [s.holds(d.receipt) is not None for d in deliveries]
            tags = list(
                dict.fromkeys(d.receipt[1] for d, h in zip(deliveries, held, strict=True) if h)
            )
            if tags:
                self._ack_tags(s, tags)
                self._confirm_acks(s)
            return held

        try:
            return self._call(run, self.publish_timeout)
        except (_Down, BrokerUnavailable):
            return [False] * len(deliveries)

    def ack_pipe(self, results: object) -> AckPipe:
        """basic.ack has no reply: each ack is written as its task ends, and the round
        trip that confirms the server processed them waits for `collect`."""
        return _AMQPAckPipe(self)

    def retry(self, delivery: Delivery, delay: float, *, counted: bool = True) -> bool:
        def work(s: _Session, held: _Held, tag: int) -> None:
            headers = held.copy_headers({H_RETRIES: held.retries + int(counted), H_PRIOR: 0})
            self._move(s, tag, held.lane, delivery.body, headers, delay=delay)

        return self._settle(delivery, work)

    def _dead_headers(self, held: _Held, count: int, reason: str = "") -> dict[str, Any]:
        return held.copy_headers(
            {
                H_REASON: reason or poison_reason(count - 1),
                H_DEAD_AT: repr(time.time()),
                H_COUNT: count,
                H_RETRIES: held.retries,
            }
        )

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        def work(s: _Session, held: _Held, tag: int) -> None:
            headers = self._dead_headers(held, held.count, reason)
            self._move(s, tag, f"{held.queue}.dead", delivery.body, headers)

        return self._settle(delivery, work)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give `deliveries` back (see `_give_back`), and end the stream: the worker stops
        or takes fewer, so what the consumer pushed and no fetch took goes back too."""

        def work(s: _Session, _: _Request) -> None:
            self._end_stream(s)
            kept = []
            for d in deliveries:
                held = s.holds(d.receipt)
                if held is not None:
                    kept.append((d.receipt[1], held, d.body))
            self._give_back(s, kept)
            if kept:
                self._confirm_acks(s)

        if self._link is None:
            return  # never connected: nothing is held
        with contextlib.suppress(_Down, BrokerUnavailable):
            # Its channel died with the connection: the server returned everything.
            self._call(work, self.publish_timeout)

    def abandon(self, deliveries: Sequence[Delivery]) -> None:
        """Copies with the count raised, then acks (`_give_back`): the lease is the
        channel's life, so ending it by time, as other brokers do, would never happen."""

        def work(s: _Session, _: _Request) -> None:
            kept = []
            for d in deliveries:
                held = s.holds(d.receipt)
                if held is not None:
                    kept.append((d.receipt[1], held, d.body))
            self._give_back(s, kept, counted=True)
            if kept:
                self._confirm_acks(s)

        if self._link is None:
            return  # never connected: nothing is held
        with contextlib.suppress(_Down, BrokerUnavailable):
            # Its channel died with the connection: the server returned it, counted.
            self._call(work, self.publish_timeout)

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
                for delays in self._delay_queues.values():
                    delays.discard(name)  # an expired delay queue
        return total

    def _buffered(self, s: _Session, queue: str, drop: bool = False) -> int:
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
            self._ack_tags(s, tags)
            self._confirm_acks(s)
        return count

    def _delays(self, queue: str) -> list[str]:
        return sorted(self._delay_queues.get(queue, ()))

    def depth(self, queue: str) -> int:
        """Ready messages in the lanes, plus those waiting in the delay queues this process
        used (AMQP 0-9-1 cannot list queues, so another process's delays are not seen)."""
        return self._must(
            lambda s, _: (
                self._count(s, self.lanes(queue) + self._delays(queue)) + self._buffered(s, queue)
            )
        )

    def stats(self, queue: str) -> QueueStats:
        """In-flight is None: AMQP reports a queue's ready messages, not its unacked ones."""

        def work(s: _Session, _: _Request) -> QueueStats:
            delayed = self._count(s, self._delays(queue))
            ready = self._count(s, self.lanes(queue)) + self._buffered(s, queue)
            return QueueStats(ready + delayed, delayed, None, self._count(s, [f"{queue}.dead"]))

        return self._must(work)

    def purge(self, queue: str) -> int:
        return self._must(
            lambda s, _: (
                self._count(s, self.lanes(queue) + self._delays(queue), purge=True)
                + self._buffered(s, queue, drop=True)
            )
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
            int(h.get(H_RETRIES, 0)),
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
                        headers[H_RETRIES] = 0
                        self._send(s, _Out(queue, queue, body, props.message_id or "", headers))
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
        """Give back what the stream pushed and no fetch took, then close the connection;
        the server returns unacked deliveries (counted by the quorum queue, as for a dead
        worker). A later call connects again."""
        with self._link_lock:
            link, self._link = self._link, None
        if link is None:
            return
        if link.is_alive():
            with contextlib.suppress(_Down, BrokerUnavailable):
                link.call(lambda s, _: self._end_stream(s), self.publish_timeout)
        link.stop()


class _AMQPAckPipe(AckPipe):
    """`AMQPBroker.ack_pipe`: acks only (RabbitMQ keeps no results)."""

    def __init__(self, broker: AMQPBroker) -> None:
        self.broker = broker
        #: Each delivery sent, with the session its ack went out on (None: not held).
        self._sent: list[tuple[Delivery, _Session | None]] = []

    @property
    def pending(self) -> int:
        return len(self._sent)

    def send(self, delivery: Delivery, record: tuple[str, str, bytes] | None, ttl: float) -> None:
        if record is not None:
            raise ValueError("RabbitMQ keeps no results: store the record first")

        def run(s: _Session, _: _Request) -> _Session | None:
            if s.holds(delivery.receipt) is None:
                return None
            self.broker._ack_tags(s, [delivery.receipt[1]])  # written to the socket here
            return s

        try:
            session = self.broker._call(run, self.broker.publish_timeout)
        except (_Down, BrokerUnavailable):
            session = None  # the connection went: the server gives the delivery back
        self._sent.append((delivery, session))

    def collect(self) -> list[bool]:
        sent, self._sent = self._sent, []
        sessions = {id(s) for _, s in sent if s is not None}
        if not sessions:
            return [False] * len(sent)

        def run(s: _Session, _: _Request) -> _Session:
            self.broker._confirm_acks(s)
            return s

        try:
            confirmed: _Session | None = self.broker._call(run, self.broker.publish_timeout)
        except (_Down, BrokerUnavailable):
            confirmed = None
        # Acks written on a connection that is gone since were dropped with it.
        return [s is not None and s is confirmed for _, s in sent]

    def close(self) -> None:
        self._sent = []
