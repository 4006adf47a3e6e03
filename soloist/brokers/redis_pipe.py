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
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from .base import AckPipe, Delivery

if TYPE_CHECKING:
    from .redis_connection import RedisConnection, Script

#: What writing or reading the link raises when it is lost (replies' errors are read).
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError)

Call = tuple["Script", tuple[object, ...]]
#: A result store's put, as (script, arguments) for one record kept `ttl` seconds.
PutCall = Callable[[tuple[str, str, bytes], float], Call]


class _Sent:
    """One delivery's settle: its calls (a put, then the ack), and whether their replies
    are still to be read on the live link (else they are unknown: sent again)."""

    __slots__ = ("calls", "on_link")

    def __init__(self, calls: list[Call]) -> None:
        self.calls = calls
        self.on_link = True


class RedisAckPipe(AckPipe):
    def __init__(self, conn: RedisConnection, ack: Script, put: PutCall | None) -> None:
        self.conn = conn
        self._ack = ack
        self._put = put
        self.records = put is not None
        self._link: Any = None  # a redis-py Connection of its own, or None until needed
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
        sent = _Sent(calls)
        self._sent.append(sent)
        if self._down:
            sent.on_link = False  # `collect` makes its calls, after the others
            return
        try:
            link = self._open()
            link.send_packed_command(link.pack_commands(_wire(calls)))
        except _TRANSIENT:
            self._drop()

    def collect(self) -> list[bool]:
        while len(self._answered) < len(self._sent):  # an exception keeps the answers
            self._answered.append(self._answer(self._sent[len(self._answered)]))
        acked, self._answered, self._sent = self._answered, [], []
        self._down = False
        return acked

    def close(self) -> None:
        if self._link is not None:
            self._link.disconnect()
            self._link = None

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
                        script(*args)
                return _acked(replies[-1], False)
        # Unknown (the link dropped), not run (the transaction was refused) or the ack
        # refused: the calls again, in order, each reconnecting through an outage.
        for script, args in sent.calls[:-1]:
            script(*args)
        reply, _ = self._ack.resent(*sent.calls[-1][1])
        return _acked(reply, True)

    def _read(self, sent: _Sent) -> list[Any] | None:
        """The replies of `sent`'s calls, or None if its transaction was refused whole
        (at maxmemory: the put's script may not run, so neither may the ack)."""
        link = self._link
        if len(sent.calls) == 1:
            return [_response(link)]
        for _ in range(len(sent.calls) + 1):  # MULTI's OK, then QUEUED for each call
            _response(link)
        replies = _response(link)  # EXEC
        return None if isinstance(replies, redis.ResponseError) else list(replies)

    def _open(self) -> Any:
        if self._pid != os.getpid():
            self._link, self._pid = None, os.getpid()  # never a parent's socket
        if self._link is None:
            link = self.conn.link()
            # A new link may reach a restarted server: load the scripts before using them.
            for script in {call[0] for s in self._sent for call in s.calls}:
                link.send_command("SCRIPT", "LOAD", script.source)
                link.read_response()
            self._link = link
        return self._link

    def _drop(self) -> None:
        """The link broke: what it carried is unknown now."""
        self._down = True
        for sent in self._sent:
            sent.on_link = False
        if self._link is not None:
            self._link.disconnect()
            self._link = None


def _wire(calls: list[Call]) -> list[tuple[object, ...]]:
    commands = [script.command(*args) for script, args in calls]
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
