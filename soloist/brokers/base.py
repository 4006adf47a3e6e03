"""The broker contract: leased, at-least-once delivery of opaque message bodies.

Every broker implements these methods with the same guarantees, and one contract test
suite (tests/brokers/test_contract.py) holds each of them to it:

* `publish` is durable once it returns.
* `fetch` hands out deliveries under a lease; a delivery is invisible to every other
  consumer until it is settled or its lease lapses.
* Settling (`ack`, `retry`, `dead_letter`, `release`, `abandon`) is fenced by the
  delivery's receipt: once the lease lapsed and the message was handed to someone else,
  the old holder's settle is refused (returns False) and changes nothing. Such a
  delivery is *stale*: `extend` returns it, and the worker drops its outcome.
* A message whose lease lapsed is delivered again with `delivery_count` raised; once it
  has been handed out `max_deliveries` times without being settled it is dead-lettered,
  so a message that kills every worker touching it cannot loop forever.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigurationError
from ..urls import redact

#: Times a message may be handed out without being settled before it is dead-lettered.
DEFAULT_MAX_DELIVERIES = 5


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """The parser of an option that counts something: a whole number from `low` (up to
    `high`, when given)."""

    def parse(value: str) -> int:
        number = int(value)
        if number < low or (high is not None and number > high):
            span = f"{low} or more" if high is None else f"{low} to {high}"
            raise ValueError(f"must be {span}")
        return number

    return parse


#: A count of at least one (max_deliveries, say).
positive_int = whole(1)


def seconds(value: str) -> float:
    """An option that is a duration: a number of seconds, not negative."""
    number = float(value)
    if not number >= 0:  # NaN too
        raise ValueError("must be a number of seconds, 0 or more")
    return number


def url_options(
    url: str, ours: Mapping[str, Callable[[str], Any]], others: bool = False
) -> tuple[str, dict[str, Any]]:
    """Split a broker or result store URL's query into (the URL with what is left of it, our
    options parsed), each broker's options read in one place.

    `ours` maps each option this store reads to its parser. A value its parser refuses, an
    option given twice, and (unless `others`: the rest goes to the client library, which
    checks it) an option nobody reads are a ConfigurationError naming the option."""
    parts = urlsplit(url)
    options: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in ours:
            rest.append((name, value))
            continue
        if name in options:
            raise ConfigurationError(f"option {name} given twice in {redact(url)}")
        try:
            options[name] = ours[name](value)
        except ValueError as exc:
            raise ConfigurationError(f"bad {name}={value!r} in {redact(url)}: {exc}") from None
    if rest and not others:
        known = ", ".join(sorted(ours)) or "none"
        raise ConfigurationError(
            f"unknown option {rest[0][0]} in {redact(url)} (this one reads: {known})"
        )
    return urlunsplit(parts._replace(query=urlencode(rest))), options


class Delivery(NamedTuple):
    """One message handed to one consumer under a lease (a named tuple: brokers make one
    per message handed out, at a fifth of a frozen dataclass's cost)."""

    id: str
    queue: str
    body: bytes
    #: 1 on the first delivery; raised each time a lease lapsed and it was handed out again.
    delivery_count: int
    #: How many times the message went through `retry`; 0 on its first run.
    retries: int
    #: The broker's token for this lease; settling with a stale receipt is refused.
    receipt: Any = None


@dataclass(frozen=True)
class DeadLetter:
    """A message in a queue's dead-letter store."""

    id: str
    queue: str
    body: bytes
    reason: str
    delivery_count: int
    retries: int
    dead_at: float


@dataclass(frozen=True)
class QueueStats:
    """What `soloist status` shows of a queue; None where a broker cannot tell cheaply."""

    #: Waiting messages, due or delayed: `depth()`.
    depth: int
    #: Of those, the ones not due yet.
    delayed: int | None = None
    #: Leased to a consumer and not settled.
    in_flight: int | None = None
    #: In the queue's dead-letter store.
    dead: int | None = None
    #: Messages found gone from the store before they ran (a Redis that evicted them).
    lost: int | None = None


def poison_reason(count: int) -> str:
    return f"delivered {count} times without being settled (its worker died each time)"


class AckPipe(abc.ABC):
    """Acks written to the broker as tasks end, their replies read later in one go.

    A worker settles each task before the next starts (so a SIGKILL reruns only the task
    that was running) without paying a round trip per task: `send` returns once the ack
    (and the result record before it) is on its way, `collect` reads the replies."""

    #: Whether `send` writes result records too; if not, store them before sending.
    records: bool = False

    @property
    @abc.abstractmethod
    def pending(self) -> int:
        """Deliveries sent whose reply is not read yet."""

    @abc.abstractmethod
    def send(self, delivery: Delivery, record: tuple[str, str, bytes] | None, ttl: float) -> None:
        """Write the result `record` (task id, state, body; kept `ttl` seconds) if any, then
        the ack of `delivery`, in that order, without waiting for a reply."""

    @abc.abstractmethod
    def collect(self) -> list[bool]:
        """For each delivery sent since the last call, in order, whether it was acked
        (False: it was stale). What a lost connection left unanswered is sent again;
        BrokerUnavailable after too long an outage keeps every answer for the next call."""

    @abc.abstractmethod
    def close(self) -> None:
        """Drop the pipe's connection (what is unanswered stays unknown)."""


class Broker(abc.ABC):
    """A queue server seen through the handful of operations a worker and an operator need."""

    url: str = ""
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    #: Whether `interrupt` cuts a fetch's wait short: then an idle worker may fetch with a
    #: long timeout (few calls to the broker) and still stop at once.
    interruptible: bool = False

    @abc.abstractmethod
    def publish(self, queue: str, body: bytes, *, delay: float = 0, priority: int = 0) -> str:
        """Enqueue `body`, visible after `delay` seconds; higher `priority` goes first.

        Durable once it returns. Returns the broker's message id.
        """

    def publish_many(self, items: Sequence[tuple[str, bytes, float, int]]) -> list[str]:
        """Publish (queue, body, delay, priority) items, durable once it returns; their ids.

        The default publishes one by one; brokers that can batch the round trips do."""
        return [self.publish(q, body, delay=delay, priority=p) for q, body, delay, p in items]

    @abc.abstractmethod
    def fetch(
        self, queues: Sequence[str], max_count: int, lease: float, timeout: float
    ) -> list[Delivery]:
        """Wait up to `timeout` seconds and lease up to `max_count` due messages.

        Queues are served in the order given; within a queue by priority, then age.
        A message whose lease lapsed (its worker died) is handed out alone, never in a
        batch: only the message that was running when a worker died should collect
        deliveries towards `max_deliveries`, not those prefetched beside it.
        """

    def interrupt(self) -> None:
        """From another thread: make the fetch waiting now, or else the next one, return
        soon (with what it has). Where `interruptible` is False, it does nothing."""

    @abc.abstractmethod
    def ack(self, delivery: Delivery) -> bool:
        """Remove a delivered message for good. False if the delivery was stale."""

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """`ack` each delivery; for each, False if it was stale.

        The default acks one by one; brokers that can batch the round trips do."""
        return [self.ack(d) for d in deliveries]

    def ack_pipe(self, results: object) -> AckPipe | None:
        """An `AckPipe` carrying acks, and the records of the result store `results` where
        it can write them on the same connection; None where acks cannot be pipelined
        (the worker then acks with a round trip, or in batches: `--settle-batch`)."""
        return None

    @abc.abstractmethod
    def retry(self, delivery: Delivery, delay: float, *, counted: bool = True) -> bool:
        """Make the message visible again after `delay`, with `retries` raised (left as
        it is with `counted=False`: a task deferred by a limit, which did not run)."""

    @abc.abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        """Move the message to its queue's dead-letter store with `reason`."""

    @abc.abstractmethod
    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give unstarted deliveries back at once, as if never delivered (shutdown)."""

    def abandon(self, deliveries: Sequence[Delivery]) -> None:
        """Give back deliveries whose run was lost (the process running it died), at once
        and counted: each is delivered again with `delivery_count` raised, as if its holder
        had died, so one that kills every run ends dead-lettered after `max_deliveries`.

        The default ends the lease now; a broker whose leases do not end by time overrides
        it."""
        self.extend(deliveries, 0)

    @abc.abstractmethod
    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[Delivery]:
        """Renew leases for `lease` seconds from now; returns the stale deliveries, those
        no longer held."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Reach the server in one round trip (or one trivial statement), or raise
        BrokerUnavailable (ConfigurationError for a server set up wrong). A worker and the
        CLI call it to fail fast at start-up: unlike `depth`, it costs the same on a queue
        of a million messages."""

    @abc.abstractmethod
    def depth(self, queue: str) -> int:
        """Messages waiting in `queue`, due or delayed, not counting those leased."""

    def stats(self, queue: str) -> QueueStats:
        """Counts of `queue` for operators. The default knows only the depth."""
        return QueueStats(self.depth(queue))

    def check(self) -> None:
        """Before a worker's first fetch: raise ConfigurationError if the server is set up
        to lose messages. The default has nothing to check."""

    @abc.abstractmethod
    def purge(self, queue: str) -> int:
        """Drop every waiting message of `queue`; returns how many."""

    @abc.abstractmethod
    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters of `queue`."""

    @abc.abstractmethod
    def requeue_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        """Put dead letters (all when `ids` is None) back on their queue with counts reset."""

    @abc.abstractmethod
    def drop_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        """Delete dead letters (all when `ids` is None); returns how many."""

    @abc.abstractmethod
    def heartbeat(self, worker_id: str, info: bytes, ttl: float) -> None:
        """Record that a worker is alive, with its status, for `ttl` seconds."""

    @abc.abstractmethod
    def workers(self) -> dict[str, tuple[bytes, float]]:
        """Every worker heard from within its ttl: id -> (info, last seen unix time)."""

    def forget_worker(self, worker_id: str) -> None:
        """Drop a worker's heartbeat (a clean exit)."""

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
