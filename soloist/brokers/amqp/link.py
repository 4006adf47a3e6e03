"""The I/O thread: it owns the connection, reconnects with back-off, answers
heartbeats, and runs the broker's requests in order."""

from __future__ import annotations

import contextlib
import logging
import queue as stdqueue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pika
import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingConnection

from ...errors import BrokerUnavailable, ConfigurationError
from ...urls import scrub
from .session import LATER, Answer, Down, Request, Session, Wait, fail

log = logging.getLogger("soloist.brokers.amqp")

T = TypeVar("T")

#: The I/O thread wakes at least this often when nothing happens.
TICK = 0.2
#: Reconnect back-off: doubles from the first value up to the second.
BACKOFF = (0.2, 5.0)
#: Connection-level failures: the session is gone, reconnect.
LOST = (pe.AMQPConnectionError, pe.ConnectionWrongStateError, OSError)


def os_error(exc: BaseException) -> OSError | None:
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


class Link(threading.Thread):
    """The I/O thread: connects, reconnects with back-off, and runs requests in order."""

    def __init__(self, params: pika.URLParameters, where: str, secrets: set[str]) -> None:
        super().__init__(name="soloist-amqp-io", daemon=True)
        self.params = params
        self.where = where  # redacted URL, for messages
        self.secrets = secrets  # the password, scrubbed from any server or library text
        self.requests: stdqueue.SimpleQueue[Request | None] = stdqueue.SimpleQueue()
        self.pending: list[Request] = []
        self.session: Session | None = None
        self.stopping = False
        self.wakeup = threading.Event()
        self.fatal: BrokerUnavailable | None = None
        #: Held by this thread except while it waits idle for I/O (`serve`): another
        #: thread holding it may use the session as this one would (`here`).
        self.owner = threading.Lock()
        self.idle = False

    def describe(self, exc: BaseException) -> str:
        cause = os_error(exc)
        if cause is not None:  # "connection refused (host:port)", not pika's wrapper's name
            why = (cause.strerror or type(cause).__name__).lower()
            return f"{why} ({self.params.host}:{self.params.port})"
        text = f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)
        return scrub(text, self.secrets)

    # -- the caller's side -------------------------------------------------------------

    def call(
        self, work: Callable[[Session, Request], T], timeout: float, retry: bool = False
    ) -> T:
        """Run `work` on the I/O thread; raises `Down` if the connection is not there."""
        if self.fatal is not None:
            raise self.fatal
        req = Request(work, Answer(), time.monotonic() + timeout, retry)
        self.requests.put(req)
        self.wake()
        # The I/O thread answers every request by its deadline (a request already running
        # on a dying connection may take longer); if the thread ended, nobody will.
        while not req.answer.wait(1.0):
            if not self.is_alive() and not req.answer.done():
                raise self.fatal or Down()
        result: T = req.answer.result()
        return result

    def here(self, work: Callable[[Session], T], timeout: float = 0.005) -> T | None:
        """Run `work` on the caller's thread, if within `timeout` the I/O thread is idle,
        waiting for I/O with nothing else to do; else None (then `call`). A worker's ack
        thus costs no thread switch: the I/O thread sleeps through it."""
        if not self.owner.acquire(timeout=timeout):
            return None
        try:
            session = self.session
            if session is None or not self.idle:
                return None
            return work(session)
        finally:
            self.owner.release()

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
        backoff = BACKOFF[0]
        connected_once = failing = False
        self.owner.acquire()
        try:
            while not self.stopping:
                if self.session is None:
                    try:
                        self.session = Session(BlockingConnection(self.params))
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
                        backoff = min(backoff * 2, BACKOFF[1])
                        continue
                    poller = self.session.conn._impl.ioloop._poller
                    poller._poll = Yielding(poller._poll, self)
                    if failing:
                        log.warning("RabbitMQ at %s: reconnected", self.where)
                    connected_once, failing, backoff = True, False, BACKOFF[0]
                try:
                    self.serve(self.session)
                except LOST as exc:
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
                fail(req, self.fatal or Down())
            self.owner.release()

    def pause(self, seconds: float) -> None:
        """Back off before reconnecting, answering the requests that cannot wait."""
        until = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < until:
            self.expire(down=True)
            self.wakeup.wait(min(until - time.monotonic(), TICK))
            self.wakeup.clear()

    def take_all(self) -> Iterator[Request]:
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
                fail(req, Down())
            else:
                keep.append(req)
        self.pending = keep

    def serve(self, s: Session) -> None:
        while not self.stopping:
            self.wakeup.clear()
            for req in self.take_all():
                self.run_one(s, req)
            self.idle = True
            try:
                s.conn.process_data_events(time_limit=TICK)
            finally:
                self.idle = False
            s.repair()
            if s.wait is not None:
                self.check_wait(s, s.wait)

    def run_one(self, s: Session, req: Request, waited: bool = False) -> None:
        if req.deadline <= time.monotonic() and not waited:
            fail(req, Down())
            return
        try:
            result = req.work(s, req)
        except LOST:
            if req.retry:
                self.pending.append(req)  # once reconnected, unless its deadline passed
            else:
                fail(req, Down())
            raise
        except pe.AMQPChannelError as exc:
            if not s.conn.is_open:
                fail(req, Down())
                raise pe.ConnectionWrongStateError(str(exc)) from exc
            s.repair()
            fail(req, self.channel_error(exc))
        except Exception as exc:
            fail(req, exc)
        else:
            if result is not LATER:
                req.answer.set_result(result)

    def channel_error(self, exc: pe.AMQPChannelError) -> Exception:
        text = self.describe(exc)
        if isinstance(exc, pe.ChannelClosedByBroker) and exc.reply_code == 406:
            # PRECONDITION_FAILED on a declaration: the queue exists with other arguments
            # (another max_deliveries or max_priority, or a classic queue of that name).
            return ConfigurationError(f"RabbitMQ at {self.where} refused: {text}")
        return BrokerUnavailable(f"RabbitMQ at {self.where}: {text}")

    def check_wait(self, s: Session, wait: Wait) -> None:
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


class Yielding:
    """pika's poller (an epoll object) made to let go of `Link.owner` while it waits, when
    the link is idle, and take it back before pika handles what it found."""

    def __init__(self, poller: Any, link: Link) -> None:
        self.poller = poller
        self.link = link

    def poll(self, timeout: float | None) -> Any:
        if not self.link.idle:
            return self.poller.poll(timeout)
        self.link.owner.release()
        try:
            return self.poller.poll(timeout)
        finally:
            self.link.owner.acquire()

    def __getattr__(self, name: str) -> Any:  # register, modify, unregister, close
        return getattr(self.poller, name)
