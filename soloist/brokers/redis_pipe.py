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
from typing import TYPE_CHECKING, Any, cast

import hiredis
import redis
from redis._parsers.hiredis import NOT_ENOUGH_DATA

from .base import AckPipe, Delivery
from .cluster import queue_tag
from .redis_connection import pack

if TYPE_CHECKING:
    from .redis_connection import RedisConnection
    from .redis_script import Script

#: hiredis's packer, for a command's arguments only (`RedisAckPipe._wire`).
_pack: Callable[[tuple[object, ...]], bytes] = cast(Any, hiredis.pack_command)
_MULTI, _EXEC = pack([("MULTI",)])[0], pack([("EXEC",)])[0]

#: What writing or reading the link raises when it is lost (replies' errors are read):
#: redis-py's errors, or the socket's own where the pipe uses it directly.
_LOST = (redis.ConnectionError, redis.TimeoutError, OSError)

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
        #: Each queue's hash tag (`queue_tag`), worked out once.
        self._tags: dict[str, str] = {}
        #: By (script, tag, number of arguments): `_head`, for `_wire`.
        self._heads: dict[tuple[Script, str, int], tuple[bytes, int]] = {}
        self._answered: list[bool] = []
        #: The link broke with settles unanswered: later ones wait for `collect` too.
        self._down = False

    @property
    def pending(self) -> int:
        return len(self._sent)

    def send(self, delivery: Delivery, record: tuple[str, str, bytes] | None, ttl: float) -> None:
        ack: Call = (self._ack, (delivery.id, delivery.receipt))
        if record is None:
            calls = [ack]
        elif self._put is None:
            raise ValueError("this pipe carries acks only: store the record first")
        else:
            calls = [self._put(record, ttl), ack]
        tag = self._tags.get(delivery.queue)
        if tag is None:
            tag = self._tags[delivery.queue] = queue_tag(delivery.queue)
        sent = _Sent(calls, tag)
        self._sent.append(sent)
        if self._down:
            sent.on_link = False  # `collect` makes its calls, after the others
            return
        try:
            sent.link = link = self._open(tag)
            _write(link, self._wire(calls, tag))
        except _LOST:
            self._drop()

    def collect(self) -> list[bool]:
        answered = self._answered
        for sent in self._sent[len(answered) :]:  # an exception keeps the answers
            answered.append(self._answer(sent))
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
            except _LOST:
                self._drop()
                replies = None
            sent.on_link = False  # read: from here on, its calls are made directly
            if replies is not None and not isinstance(replies[-1], redis.ResponseError):
                if len(replies) > 1:
                    # A record did not run though the ack did (a SCRIPT FLUSH): stored
                    # late, or BrokerUnavailable (the store refuses it) until it is.
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
            return [_reply(link)]
        for _ in range(len(sent.calls) + 1):  # MULTI's OK, then QUEUED for each call
            _reply(link)
        replies = _reply(link)  # EXEC
        return None if isinstance(replies, redis.ResponseError) else list(replies)

    def _wire(self, calls: list[Call], tag: str) -> bytes:
        """`calls` as the bytes of one write, a MULTI/EXEC around them if there are two.
        The words of each script's EVALSHA before its arguments are packed once for each
        tag (then kept): only the arguments are packed per call, at half the cost of
        packing the whole command each time."""
        parts = []
        for script, args in calls:
            key = (script, tag, len(args))
            head = self._heads.get(key)
            if head is None:
                head = self._heads[key] = _head(script.command(tag=tag), len(args))
            words, skip = head
            parts.append(words + _pack(args)[skip:])
        return parts[0] if len(parts) == 1 else b"".join([_MULTI, *parts, _EXEC])

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


def _head(words: tuple[object, ...], n: int) -> tuple[bytes, int]:
    """A command's `words` packed as the start of one with `n` arguments after them, and
    the length of the array header to cut from `n` arguments packed on their own."""
    start = len(b"*%d\r\n" % len(words))
    return b"*%d\r\n" % (len(words) + n) + pack([words])[0][start:], len(b"*%d\r\n" % n)


def _write(link: Any, data: bytes) -> None:
    """`data` down `link`: its socket's `sendall` straight, without the Connection's
    `send_packed_command` and its checks around it, which every settle paid, and
    like it closing the link on a failed or interrupted write."""
    sock = link._sock
    if sock is None:  # closed meanwhile (redis-py would connect again, losing replies)
        raise redis.ConnectionError("the ack pipe's link was closed")
    try:
        sock.sendall(data)
    except BaseException:
        link.disconnect()
        raise


def _reply(link: Any) -> Any:
    """The next reply on `link`, an error reply as its exception: taken from the
    Connection's hiredis reader straight, receiving more only when it holds no whole
    reply (the replies of a batch of settles arrive together), rather than through
    `read_response`'s layers once per reply. Like them it closes the link on a failed
    or interrupted read, and raises an error reply that means the link is lost."""
    parser = link._parser
    reader = parser._reader
    if reader is None:
        raise redis.ConnectionError("the ack pipe's link was closed")
    try:
        reply = reader.gets()
        while reply is NOT_ENOUGH_DATA:
            parser.read_from_socket()
            reply = reader.gets()
        if isinstance(reply, redis.ConnectionError):  # LOADING, say
            raise reply
    except BaseException:
        link.disconnect()
        raise
    return reply


def _acked(reply: int, resent: bool) -> bool:
    """The ack script's reply for one delivery: 1 acked; 2 gone already, which after a
    lost reply was this pipe's own earlier try."""
    (n,) = reply if isinstance(reply, list) else (reply,)
    return bool(n == 1 or (n == 2 and resent))
