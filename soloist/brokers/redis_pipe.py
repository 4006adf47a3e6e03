"""Acks pipelined on Redis: each written as its task ends, the replies read in batches.

A worker settles every task before starting the next, so a SIGKILL reruns only the task
that was running; writing the settle without waiting for its reply keeps that from
costing a round trip per task. A task's result record and its ack travel in one
MULTI/EXEC on one connection, so Redis runs both or neither: an ack never lands without
the result before it, even at `maxmemory` (the record's script is refused there, which
aborts the transaction). Replies wait in the socket until `collect` reads them.

A connection lost with replies unread leaves those settles unknown: `collect` sends them
again through the reconnecting script path, where an ack that finds its message gone
counts as acked (its first try ran), as `RedisBroker.ack_many` does after a lost reply.

On a Cluster the pipe holds a link per node and writes each ack to the node of its
queue's slot; it carries no records (a task's record lies in another slot than its ack,
and a transaction cannot span slots), so the worker stores them first. An ack whose slot
moved meanwhile is refused (MOVED) and made again through the script path, which follows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from .base import AckPipe, Delivery
from .cluster import queue_tag
from .redis_connection import pack

if TYPE_CHECKING:
    from .redis_connection import RedisConnection
    from .redis_script import Script

#: What writing or reading the link raises when it is lost (replies' errors are read).
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError)

Call = tuple["Script", tuple[object, ...]]
#: A result store's put, as (script, arguments) for one record kept `ttl` seconds.
PutCall = Callable[[tuple[str, str, bytes], float], Call]


class _Sent:
    """One delivery's settle: its calls (a put, then the ack), the hash tag of their keys
    (a Cluster's), the link they went down, and whether their replies are still to be
    read on it (else they are unknown: sent again)."""

    __slots__ = ("calls", "link", "on_link", "tag")

    def __init__(self, calls: list[Call], tag: str) -> None:
        self.calls = calls
        self.tag = tag
        self.link: Any = None
        self.on_link = True


class RedisAckPipe(AckPipe):
    def __init__(self, conn: RedisConnection, ack: Script, put: PutCall | None) -> None:
        self.conn = conn
        self._ack = ack
        self._put = put
        self.records = put is not None
        #: redis-py Connections of its own, by node (one, named None, on one server).
        self._links: dict[object, Any] = {}
        self._pid = os.getpid()
        self._sent: list[_Sent] = []
        self._answered: list[bool] = []
        #: The link broke with settles unanswered: later ones wait for `collect` too.
        self._down = False

    @property
    def pending(self) -> int:
        return len(self._sent)

    def send(self, delivery: Delivery, record: tuple[str, str, bytes] | None, ttl: float) -> None:
        calls: list[Call] = []
        if record is not None:
            if self._put is None:
                raise ValueError("this pipe carries acks only: store the record first")
            calls.append(self._put(record, ttl))
        calls.append((self._ack, (delivery.id, delivery.receipt)))
        sent = _Sent(calls, queue_tag(delivery.queue))
        self._sent.append(sent)
        if self._down:
            sent.on_link = False  # `collect` makes its calls, after the others
            return
        try:
            sent.link = link = self._open(sent.tag)
            link.send_packed_command(pack(_wire(calls, sent.tag)))
        except _TRANSIENT:
            self._drop()

    def collect(self) -> list[bool]:
        while len(self._answered) < len(self._sent):  # an exception keeps the answers
            self._answered.append(self._answer(self._sent[len(self._answered)]))
        acked, self._answered, self._sent = self._answered, [], []
        self._down = False
        return acked

    def close(self) -> None:
        for link in self._links.values():
            link.disconnect()
        self._links = {}

    def _answer(self, sent: _Sent) -> bool:
        """Whether `sent`'s ack took: its replies read from the link, or the calls made
        again (reconnecting) where they are unknown or did not run."""
        if sent.on_link:
            try:
                replies = self._read(sent)
            except _TRANSIENT:
                self._drop()
                replies = None
            sent.on_link = False  # read: from here on, its calls are made directly
            if replies is not None and not any(isinstance(r, redis.ResponseError) for r in replies):
                return _acked(replies[-1], False)
            if replies is not None and not isinstance(replies[-1], redis.ResponseError):
                # The ack ran but a record did not (a SCRIPT FLUSH): stored late, or
                # BrokerUnavailable (the store refuses it) until it is.
                for (script, args), reply in zip(sent.calls[:-1], replies, strict=False):
                    if isinstance(reply, redis.ResponseError):
                        script(*args, tag=sent.tag)
                return _acked(replies[-1], False)
        # Unknown (the link dropped), not run (the transaction was refused or the slot
        # moved) or the ack refused: the calls again, in order, each reconnecting through
        # an outage.
        for script, args in sent.calls[:-1]:
            script(*args, tag=sent.tag)
        reply, _ = self._ack.resent(*sent.calls[-1][1], tag=sent.tag)
        return _acked(reply, True)

    def _read(self, sent: _Sent) -> list[Any] | None:
        """The replies of `sent`'s calls, or None if its transaction was refused whole
        (at maxmemory: the put's script may not run, so neither may the ack)."""
        link = sent.link
        if len(sent.calls) == 1:
            return [_response(link)]
        for _ in range(len(sent.calls) + 1):  # MULTI's OK, then QUEUED for each call
            _response(link)
        replies = _response(link)  # EXEC
        return None if isinstance(replies, redis.ResponseError) else list(replies)

    def _open(self, tag: str) -> Any:
        if self._pid != os.getpid():
            self._links, self._pid = {}, os.getpid()  # never a parent's socket
        node = self.conn.node(tag)
        if node in self._links:
            return self._links[node]
        link = self.conn.link(tag)
        # A new link may reach a restarted server: load the scripts before using them.
        for script in {call[0] for s in self._sent for call in s.calls}:
            link.send_command("SCRIPT", "LOAD", script.source)
            link.read_response()
        self._links[node] = link
        return link

    def _drop(self) -> None:
        """The link broke: what it carried is unknown now."""
        self._down = True
        for sent in self._sent:
            sent.on_link = False
        self.close()


def _wire(calls: list[Call], tag: str) -> list[tuple[object, ...]]:
    commands = [script.command(*args, tag=tag) for script, args in calls]
    return commands if len(commands) == 1 else [("MULTI",), *commands, ("EXEC",)]


def _response(link: Any) -> Any:
    try:
        return link.read_response()
    except redis.ResponseError as exc:
        return exc


def _acked(reply: int, resent: bool) -> bool:
    """The ack script's reply for one delivery: 1 acked; 2 gone already, which after a
    lost reply was this pipe's own earlier try."""
    (n,) = reply if isinstance(reply, list) else (reply,)
    return bool(n == 1 or (n == 2 and resent))
