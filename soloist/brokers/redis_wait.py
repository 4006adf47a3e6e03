"""The idle Redis fetch's wait: a blocking command and the claim script after it, in one
write on a connection of its own, which another thread can cut short.

Redis runs the script the moment the blocking command returns, so a wake-up costs one
round trip. `interrupt` (a warm shutdown) sends CLIENT UNBLOCK for the connection, which
ends the blocking command as if it had timed out: so an idle worker can block for seconds
(few calls, little Redis CPU) and still stop at once.
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
        self._pid = os.getpid()
        #: This process's list for wake-up tokens (prelude.lua: t:<random>).
        self.token = f"{conn.prefix}t:{secrets.token_hex(8)}"
        self._blocking = False
        self._interrupted = False
        self._lock = threading.Lock()

    def run(
        self, command: tuple[object, ...], script: Script | None, args: tuple[object, ...]
    ) -> Any:
        """`command` (which may block), then `script(*args)` if given, in one write; the
        script's reply, else the command's. None, without waiting, after an `interrupt`
        that no wait has taken yet; a wait cut short by one returns what the command
        returns on a timeout."""
        self._blocking = True
        try:
            if self._interrupted:
                return None
            return self.conn.call(self._run, command, script, args)
        finally:
            self._blocking = False

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

    def _take_interrupt(self) -> bool:
        with self._lock:
            interrupted, self._interrupted = self._interrupted, False
        return interrupted

    def _run(
        self, command: tuple[object, ...], script: Script | None, args: tuple[object, ...]
    ) -> Any:
        if self._link is not None and self._pid == os.getpid():
            try:
                return self._exchange(command, script, args)
            except (redis.ConnectionError, redis.TimeoutError):
                # A link kept from before an outage: try once on a new one. The pool's
                # idle links are as old: closed, so the outage is noticed (and logged) once.
                self.conn.drop_idle()
        return self._exchange(command, script, args)

    def _exchange(
        self, command: tuple[object, ...], script: Script | None, args: tuple[object, ...]
    ) -> Any:
        link = self._open()
        commands = [command] if script is None else [command, script.command(*args)]
        try:
            link.send_packed_command(pack(commands))
            replies = []
            for _ in commands:
                try:
                    replies.append(link.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
            if script is not None and isinstance(replies[1], NoScriptError):
                # A restarted server: the token the command moved is still there to take.
                link.send_command("SCRIPT", "LOAD", script.source)
                link.read_response()
                link.send_packed_command(pack([script.command(*args)]))
                replies[1] = _response(link)
        except BaseException:
            self.close()  # a reply may be left unread: never reuse the link
            raise
        last = replies[-1]  # (one or two replies: checked without a generator on a wake-up)
        if isinstance(replies[0], redis.ResponseError) or isinstance(last, redis.ResponseError):
            if any(isinstance(r, redis.ReadOnlyError) for r in replies):
                self.close()  # a master demoted by a failover: find the new one
            raise next(r for r in replies if isinstance(r, redis.ResponseError))
        return last

    def _open(self) -> Any:
        if self._pid != os.getpid():
            # A forked child: never its parent's socket, nor its token list.
            self._link, self._client_id, self._pid = None, None, os.getpid()
            self.token = f"{self.conn.prefix}t:{secrets.token_hex(8)}"
        if self._link is None:
            self._client_id = None
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
