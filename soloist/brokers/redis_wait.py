"""The idle Redis fetch's wait: the claim script and a BLPOP on the fetcher's inbox after
it, in one write on a connection of its own, which another thread can cut short.

The claim that finds nothing leaves the fetcher's ticket on its queues (prelude.lua), so a
publish hands its message to the inbox: the BLPOP's reply is the message, and a wake-up
costs no round trip of its own. `interrupt` (a warm shutdown) sends CLIENT UNBLOCK for the
connection, which ends the BLPOP as if it had timed out: so an idle worker can block for
seconds (few calls, little Redis CPU) and still stop at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import NoScriptError

from ..errors import BrokerUnavailable
from .redis_connection import pack

if TYPE_CHECKING:
    from .redis_connection import RedisConnection
    from .redis_script import Script

log = logging.getLogger("soloist.redis")

#: The longest one wait blocks. Its connection's reads may take this much longer than the
#: URL's socket timeout (which says a link is dead); an idle worker's fetch waits this long.
MAX_BLOCK = 10.0
#: How often `interrupt` tries CLIENT UNBLOCK while the wait's command is on its way to
#: Redis (sent, not blocked yet).
_UNBLOCK_RETRY = 0.002


class Wait:
    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn
        self.max_block = MAX_BLOCK
        self._link: Any = None  # a redis-py Connection of its own, kept between waits
        self._client_id: int | None = None
        #: The scripts (SHA1s) loaded through this link since it connected (`_exchange`).
        self._loaded: set[str] = set()
        self._pid = os.getpid()
        #: This process's ticket and inbox (prelude.lua: f:<random>).
        self.ticket = self.inbox = ""
        self._new_ticket()
        #: The queues whose waiters the ticket may be among (set by the broker, whose
        #: `leave` takes it off them).
        self._queues: tuple[str, ...] = ()
        self._blocking = False
        self._interrupted = False
        self._lock = threading.Lock()

    def run(self, claim: Script, block: int, args: tuple[object, ...]) -> tuple[Any, Any] | None:
        """The claim script with this process's ticket and `block` (ms) before `args`, then
        a BLPOP of up to `block` ms on the inbox, in one write: their replies. None, without
        waiting, after an `interrupt` that no wait has taken yet, or that came while a
        wait's link was dropped (it is not sent again); a wait cut short by one returns
        what BLPOP returns on a timeout (None)."""
        self._blocking = True
        try:
            if self._interrupted:
                return None  # (without touching Redis, which may be away)
            return self.conn.call(self._run, claim, block, args)
        finally:
            self._blocking = False

    @property
    def queues(self) -> tuple[str, ...]:
        """The queues this process's ticket may wait on (none in a forked child)."""
        return self._queues if self._pid == os.getpid() else ()

    @queues.setter
    def queues(self, queues: tuple[str, ...]) -> None:
        self._queues = queues

    def cut(self) -> bool:
        """Whether an `interrupt` is pending (without taking it, as `interrupted` does)."""
        return self._interrupted

    def interrupted(self) -> bool:
        """Whether an `interrupt` cut the last wait short (then it is used up)."""
        return self._take_interrupt()

    def interrupt(self) -> None:
        """Cut the current wait short, or, if none is under way, the next one (from any
        thread). Where Redis refuses CLIENT UNBLOCK (an ACL), the wait runs to its end."""
        self._interrupted = True
        deadline = time.monotonic() + self.max_block
        while self._blocking and time.monotonic() < deadline:
            client = self._client_id
            if client is None and self._link is not None:
                return  # CLIENT ID was refused
            if client is not None:
                try:
                    if self.conn.command("CLIENT", "UNBLOCK", client):
                        return
                except BrokerUnavailable as exc:
                    log.info("cannot interrupt an idle wait: %s", exc)
                    return
            time.sleep(_UNBLOCK_RETRY)  # sent but not blocked yet, or the link is new

    def close(self) -> None:
        if self._link is not None:
            self._link.disconnect()
            self.conn.client.connection_pool.release(self._link)
            self._link = None

    def _new_ticket(self) -> None:
        self.ticket = f"{self.conn.prefix}f:{secrets.token_hex(8)}"
        self.inbox = f"{self.ticket}:in"

    def _take_interrupt(self) -> bool:
        with self._lock:
            interrupted, self._interrupted = self._interrupted, False
        return interrupted

    def _run(self, claim: Script, block: int, args: tuple[object, ...]) -> tuple[Any, Any] | None:
        if self._link is not None and self._pid == os.getpid():
            try:
                return self._exchange(claim, block, args)
            except (redis.ConnectionError, redis.TimeoutError):
                # A link kept from before an outage: try once on a new one. The pool's
                # idle links are as old: closed, so the outage is noticed (and logged) once.
                self.conn.drop_idle()
        return self._exchange(claim, block, args)

    def _exchange(
        self, claim: Script, block: int, args: tuple[object, ...]
    ) -> tuple[Any, Any] | None:
        link = self._open()
        # Again on each try, once the link and the id that `interrupt` unblocks are this
        # try's: an interrupt may have unblocked the BLPOP of a link dropped since (behind
        # NOSCRIPT, or broken) and returned, and nothing would unblock a wait sent now.
        if self._interrupted:
            return None
        commands = [claim.command(self.ticket, block, *args), ("BLPOP", self.inbox, block / 1000)]
        # A link's first call of a script loads it, in the same write: the server may lack
        # it (a restart, a failover: both drop the link), and a BLPOP behind NOSCRIPT runs
        # with no script before it, so it may take what waits in the inbox (handed over
        # between two waits) on a link that is then dropped.
        new = claim.sha not in self._loaded
        if new:
            commands.insert(0, ("SCRIPT", "LOAD", claim.source))
        try:
            link.send_packed_command(pack(commands))
            loaded = _response(link) if new else None
            first = _response(link)
            if isinstance(first, NoScriptError):
                # The BLPOP blocks with no script before it: drop the link (which ends the
                # wait) rather than read it out. Flushed since this link loaded it (SCRIPT
                # FLUSH): a new link loads it again; loaded in this write, the load failed.
                self.close()
                if new:
                    raise loaded if isinstance(loaded, redis.ResponseError) else first
                return self._exchange(claim, block, args)
            self._loaded.add(claim.sha)
            second = _response(link)
        except BaseException:
            self.close()  # a reply may be left unread: never reuse the link
            raise
        for reply in (first, second):
            if isinstance(reply, redis.ResponseError):
                if isinstance(reply, redis.ReadOnlyError):
                    self.close()  # a master demoted by a failover: find the new one
                raise reply
        return first, second

    def _open(self) -> Any:
        if self._pid != os.getpid():
            # A forked child: never its parent's socket, nor its ticket.
            self._link, self._client_id, self._pid = None, None, os.getpid()
            self._new_ticket()
        if self._link is None:
            self._client_id = None
            self._loaded.clear()
            link = self.conn.link()
            try:
                link.send_command("CLIENT", "ID")
                client_id = _response(link)
            except BaseException:
                link.disconnect()
                raise
            # Room in the socket timeout for a wait of MAX_BLOCK: this link only waits.
            # redis-py has no public way to change a connected socket's timeout.
            sock = getattr(link, "_sock", None)
            if sock is not None:
                sock.settimeout(float(link.socket_timeout or 0) + MAX_BLOCK)
            else:
                self.max_block = self.conn.max_block
            self._link = link
            # Refused (an ACL): waits cannot be interrupted, only run to their end.
            self._client_id = client_id if isinstance(client_id, int) else None
        return self._link


def _response(link: Any) -> Any:
    try:
        return link.read_response()
    except redis.ResponseError as exc:
        return exc
