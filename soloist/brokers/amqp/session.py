"""One live connection and its channels, touched only by the I/O thread; what it
remembers of each delivery it handed out (the receipts); the requests it answers."""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pika import spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from .wire import SERVER_HEADERS

log = logging.getLogger("soloist.brokers.amqp")

#: Unique across the process, so a receipt never matches a later channel by chance.
EPOCHS = itertools.count(1)


class Down(Exception):
    """The connection was down (or went down) before the request could be answered."""


@dataclass(slots=True)
class Held:
    """What the I/O thread remembers of a delivery it handed out (`headers` as received)."""

    queue: str
    lane: str
    message_id: str
    headers: dict[str, Any]
    count: int
    retries: int

    def copy_headers(self, changes: dict[str, Any]) -> dict[str, Any]:
        """The headers of a copy we publish: ours, with `changes`, not the server's."""
        ours = {k: v for k, v in self.headers.items() if k not in SERVER_HEADERS}
        return {**ours, **changes}


class Answer:
    """A request's result or error, set once by the I/O thread, awaited by its caller.

    A lock held until the answer is set: a worker waits on one for each task's ack, and a
    `concurrent.futures.Future` costs more (a condition, a waiter lock per wait, its
    callbacks), on both threads."""

    __slots__ = ("_error", "_ready", "_set", "_value")

    def __init__(self) -> None:
        self._ready = threading.Lock()
        self._ready.acquire()
        self._set = False
        self._value: Any = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._set

    def set_result(self, value: Any) -> None:
        self._value = value
        self._finish()

    def set_exception(self, exc: BaseException) -> None:
        self._error = exc
        self._finish()

    def _finish(self) -> None:
        if self._set:
            raise RuntimeError("a request answered twice")
        self._set = True
        self._ready.release()

    def wait(self, timeout: float) -> bool:
        """Whether it was answered within `timeout` seconds."""
        if not self._ready.acquire(timeout=timeout):
            return False
        self._ready.release()
        return True

    def result(self) -> Any:
        """The answer (after `wait`): its value, or its error raised."""
        if self._error is not None:
            raise self._error
        return self._value


@dataclass
class Request:
    work: Callable[[Session, Request], Any]
    answer: Answer
    deadline: float  # monotonic
    retry: bool  # run again after a reconnect (publish); else fail at once when down


#: What takes a consumer's delivery (method, properties, body).
Taker = Callable[[Any, Any, bytes], None]

#: Returned by a request's work when it sets its answer itself, later (fetch waits).
LATER = object()


@dataclass
class Wait:
    """A fetch blocked until `ready()` (a consumer pushed something for it) or `until`
    (monotonic); then the I/O thread runs its request again, which answers it."""

    request: Request
    until: float
    ready: Callable[[], bool]


@dataclass
class Stream:
    """The consumer that feeds fetches of one lane, and what it pushed that no fetch took.

    Its prefetch (basic.qos, per consumer) follows the fetches' max_count. RabbitMQ
    applies a qos only to consumers started after it, so a new prefetch means a new
    consumer (`Consumer.resize`); one consumer at a time, because a quorum queue
    interleaves its messages across several consumers out of order.
    """

    queue: str
    lane: str
    prefetch: int = 0
    tag: str | None = None  # None once cancelled: only its buffer is left to hand out
    take: Taker = field(default=lambda _m, _p, _b: None)  # the consumer's delivery -> buffer
    buffer: deque[tuple[Any, Any, bytes]] = field(default_factory=deque)  # method, props, body
    mine: set[int] = field(default_factory=set)  # the consumer's tags, buffered or handed out
    resize: int = 0  # the prefetch fetches asked for since; 0 when it is right
    keep: int = 0  # on shrinking, how many buffered messages to keep (the last count)
    fetched: float = -math.inf  # when a fetch last came (monotonic)

    def full(self) -> bool:
        """The server has no room to push more, so nothing can be in flight."""
        return len(self.mine) >= self.prefetch


def fail(req: Request, exc: BaseException) -> None:
    if not req.answer.done():
        req.answer.set_exception(exc)


class Session:
    """One live connection and its channels; touched only by the I/O thread.

    `pub` is in confirm mode and also declares queues, so a declaration refused by the
    server (406) closes it and never the channel that holds our deliveries. `tx` publishes
    batches in one transaction (its commit-ok, like a confirm, waits for the queues).
    `sub` gets, consumes and acks; its death ends every lease it held, hence a new epoch.
    `sub` is transactional too, so that giving deliveries back (copies published, the
    originals acked) happens whole or not at all: its acks take effect at a commit
    (`Consumer.commit_soon`, `Consumer.confirm_acks`).
    """

    def __init__(self, conn: BlockingConnection) -> None:
        self.conn = conn
        self.pub = conn.channel()
        self.pub.confirm_delivery()
        self.tx: BlockingChannel | None = None
        #: Message ids the server returned (mandatory, unroutable) on a channel `watch`ed.
        self.returned: set[str] = set()
        self.declared: dict[str, float] = {}  # queue -> when declared (monotonic)
        self.open_sub()

    def open_sub(self) -> None:
        self.sub = self.conn.channel()
        self.sub.tx_select()
        self.watch(self.sub)
        #: Commits written on `sub` and not answered yet. They go out without pika's RPC
        #: machinery, which would hold each one until the last is answered.
        self.commits_out = 0
        impl = self.sub._impl
        impl.callbacks.add(impl.channel_number, spec.Tx.CommitOk, self._committed, one_shot=False)
        #: Consumers being cancelled -> where a delivery that reaches them before the
        #: cancel-ok goes. pika would reject it (requeue), and a quorum queue counts a
        #: reject as a delivery: a message never handed out would come back counted.
        self.takers: dict[str, Taker] = {}
        deliver, takers = impl._on_deliver, self.takers

        def on_deliver(method_frame: Any, header_frame: Any, body: bytes) -> None:
            take = takers.get(method_frame.method.consumer_tag)
            if take is None:
                deliver(method_frame, header_frame, body)
            else:
                take(method_frame.method, header_frame.properties, body)

        impl._on_deliver = on_deliver
        self.epoch = next(EPOCHS)
        self.held: dict[int, Held] = {}
        self.pushed: list[tuple[str, Any, Any, bytes]] = []  # (lane, method, props, body)
        self.consumers: dict[str, str] = {}  # idle-wait consumer tag -> lane
        self.stream: Stream | None = None
        self.wait: Wait | None = None

    def transacting(self) -> BlockingChannel:
        if self.tx is None:
            self.tx = self.conn.channel()
            self.tx.tx_select()
            self.watch(self.tx)
        return self.tx

    def watch(self, ch: BlockingChannel) -> None:
        """Note in `returned` the messages the server returns on `ch`."""
        returned = self.returned
        ch.add_on_return_callback(lambda _c, _m, props, _b: returned.add(props.message_id))

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

    def _committed(self, _frame: object) -> None:
        self.commits_out -= 1

    def end_wait(self) -> None:
        """Answer a waiting fetch with nothing (its channel or consumer is going)."""
        wait, self.wait = self.wait, None
        if wait is not None and not wait.request.answer.done():
            wait.request.answer.set_result([])

    def holds(self, receipt: Any) -> Held | None:
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
