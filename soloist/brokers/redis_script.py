"""Lua scripts on Redis: each file in brokers/redis/ (or a folder beside the result store
or the Celery bridge), run by its SHA1 after the helpers it calls from the prelude every
script shares (brokers/redis/prelude.lua, which opens with the key schema), and loaded
again when the server lost it."""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import NoScriptError

from ..errors import BrokerUnavailable
from .cluster import tagged

if TYPE_CHECKING:
    from .redis_connection import RedisConnection

log = logging.getLogger("soloist.redis")

#: The Lua scripts, one file each in brokers/redis/. prelude.lua, whose helpers run before
#: the scripts that call them (ARGV[1] is the key prefix), opens with the key schema and
#: defines the key names.
_LUA = Path(__file__).with_name("redis")


def _lua(name: str, folder: Path = _LUA) -> str:
    """The script `name` of `folder` (by default brokers/redis/; the result store's and
    the Celery bridge's sit in folders beside their modules)."""
    return (folder / f"{name}.lua").read_text()


def _pieces(prelude: str) -> list[tuple[re.Pattern[str] | None, str]]:
    """The prelude cut at each top-level `local` (a function, or variables), each piece
    with the comment lines just above it and a pattern matching the names it defines.
    The text before the first (the key schema) defines nothing (None)."""
    pieces: list[tuple[re.Pattern[str] | None, str]] = []
    names: re.Pattern[str] | None = None
    lines: list[str] = []
    for line in prelude.splitlines(keepends=True):
        if line.startswith("local "):
            start = len(lines)
            while start and lines[start - 1].startswith("--"):
                start -= 1
            pieces.append((names, "".join(lines[:start])))
            lines = lines[start:]
            head = line[len("local ") :].split("=")[0]
            if head.startswith("function "):
                head = head[len("function ") :].split("(")[0]
            defined = "|".join(n.strip() for n in head.split(","))
            names = re.compile(rf"\b(?:{defined})\b")
        lines.append(line)
    pieces.append((names, "".join(lines)))
    return pieces


@functools.cache
def _prelude_for(source: str) -> str:
    """The pieces of the prelude `source` uses, and those they use, in their order.

    Redis runs a script's whole text on every call: each `local function` of the
    prelude is a closure made anew, so a script that leaves out those it does not call
    costs Redis less (callgrind: the whole prelude is about 9,000 instructions a call)."""
    used = [_COMMENT.sub("", source)]
    keep = [names is None for names, _ in _PIECES]
    grown = True
    while grown:
        grown = False
        for n, (names, text) in enumerate(_PIECES):
            if not keep[n] and names is not None and any(names.search(u) for u in used):
                keep[n], grown = True, True
                used.append(_COMMENT.sub("", text))
    return "".join(text for k, (_, text) in zip(keep, _PIECES, strict=True) if k)


#: Lua comments, left out when looking for the names a script uses.
_COMMENT = re.compile(r"--[^\n]*")
_PIECES = _pieces(_lua("prelude"))


class Script:
    """A Lua script run by its SHA1, and loaded again when the server lost it (a restart).

    Calling it passes the key prefix as ARGV[1], then the arguments given, and reconnects
    through outages like every other call. On a Cluster a call names the hash tag of the
    keys it touches (`tag=`): the prefix is that tag's, and routes the call (cluster.py)."""

    def __init__(
        self, conn: RedisConnection, source: str, allow_oom: bool = False, replicated: str = ""
    ) -> None:
        self.conn = conn
        # Redis 7 script flags: without allow-oom a script is refused at maxmemory.
        flags = "#!lua flags=allow-oom\n" if allow_oom else "#!lua\n"
        self.source = flags + _prelude_for(source) + source
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()
        self._head = ("EVALSHA", self.sha, 0, conn.prefix)
        #: With ?wait_replicas=N, what this script's writes are ("a publish", "a settle"):
        #: WAIT N follows it in the same write, so it covers this connection's writes.
        self._wait: tuple[tuple[object, ...], ...] = ()
        if replicated and conn.wait_replicas:
            self._wait = (("WAIT", conn.wait_replicas, max(int(conn.wait_timeout * 1000), 1)),)
        self._replicated = replicated

    def __call__(self, *args: object, tag: str = "") -> Any:
        return self.conn.call(self._run, (), args, tag)

    def once(self, *args: object) -> Any:
        """Call it on one server, without reconnecting through an outage: for a call that
        can be left undone when Redis is away (a closing fetcher's `leave`)."""
        return self._run((), args)

    def command(self, *args: object, tag: str = "") -> tuple[object, ...]:
        """The EVALSHA command calling it with `args`, to write on a connection directly."""
        return self._evalsha(args, tag)

    def resent(self, *args: object, tag: str = "") -> tuple[Any, bool]:
        """Call it; also whether it was sent again after a lost connection (`call_resent`)."""
        return self.conn.call_resent(self._run, (), args, tag)

    def each(self, calls: Sequence[tuple[str, tuple[object, ...]]]) -> list[Any]:
        """Call it once for each (tag, arguments), in one round trip per Cluster node (a
        redis-py cluster pipeline): for a batch whose keys lie in many slots."""
        return self.conn.call(self._each, calls)

    def _each(self, calls: Sequence[tuple[str, tuple[object, ...]]]) -> list[Any]:
        replies = self.conn.execute(*(self._evalsha(args, tag) for tag, args in calls))
        if any(isinstance(r, NoScriptError) for r in replies):
            self.conn.execute(("SCRIPT", "LOAD", self.source))
            for n, (tag, args) in enumerate(calls):
                if isinstance(replies[n], NoScriptError):
                    (replies[n],) = self.conn.execute(self._evalsha(args, tag))
        for r in replies:
            if isinstance(r, redis.ResponseError):
                raise r
        return replies

    def _evalsha(self, args: tuple[object, ...], tag: str) -> tuple[object, ...]:
        if not self.conn.cluster:
            return (*self._head, *args)
        if not tag:
            raise ValueError("a script call on a Cluster names its keys' hash tag")
        prefix = tagged(self.conn.prefix, tag)
        return ("EVALSHA", self.sha, 1, prefix, prefix, *args)

    def after(self, command: tuple[object, ...], *args: object) -> Any:
        """Run `command`, then this script, in one round trip: Redis runs the script the
        moment the command is done (a blocking one too). Returns the script's reply."""
        return self.conn.call(self._run, (command,), args)

    def _run(
        self, before: tuple[tuple[object, ...], ...], args: tuple[object, ...], tag: str = ""
    ) -> Any:
        evalsha = self._evalsha(args, tag)
        replies = self.conn.execute(*before, evalsha, *self._wait)
        at = len(before)
        if isinstance(replies[at], NoScriptError):
            self.conn.execute(("SCRIPT", "LOAD", self.source))
            replies[at:] = self.conn.execute(evalsha, *self._wait)
        for r in replies:
            if isinstance(r, redis.ResponseError):
                raise r
        if self._wait:
            self._check_replicas(replies[-1])
        return replies[at]

    def _check_replicas(self, acked: object) -> None:
        """A publish not on `wait_replicas` replicas in time raises (the producer may send
        it again); a settle only warns (it stands on the master, and sending it again would
        find its message gone)."""
        wanted = self.conn.wait_replicas
        if isinstance(acked, int) and acked >= wanted:
            return
        what = f"{self._replicated} reached {acked} of {wanted} replicas of {self.conn.redacted}"
        if self._replicated == "a publish":
            raise BrokerUnavailable(f"{what}: it may be lost in a failover")
        log.warning("%s: a failover now may undo it", what)
