"""Redis behind Sentinel: `redis+sentinel://h1:26379,h2:26379/<service>/<db>`.

The URL names Sentinels, not a server: each new connection asks them which server is the
service's master now (redis-py's SentinelConnectionPool), so after a failover the broker's
reconnect loop (RedisConnection.call) lands on the promoted replica without a restart. A
password in the URL is the master's; the Sentinels are asked without one.

Redis replicates asynchronously: a write the old master acknowledged and had not yet sent
to its replica is gone after a failover. `?wait_replicas=N` makes the Redis broker send
WAIT N after each publish and settle (see RedisBroker), which narrows that to writes whose
WAIT timed out, at a round trip each.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, unquote

import redis
from redis.sentinel import Sentinel, SentinelConnectionPool

from ..errors import ConfigurationError
from ..urls import redact

SCHEMES = ("redis+sentinel",)


def sentinel_pool(parts: SplitResult, **connection: Any) -> redis.ConnectionPool:
    """A pool whose connections go to the current master of the URL's service."""
    where = parts.netloc.rpartition("@")[2]
    try:
        sentinels = [
            (host, int(port)) if sep else (port, 26379)
            for host, sep, port in (item.rpartition(":") for item in where.split(","))
        ]
    except ValueError:
        raise ConfigurationError(f"bad Sentinel address in {redact(parts.geturl())}") from None
    path = [p for p in parts.path.split("/") if p]
    if not sentinels or not all(host for host, _ in sentinels) or len(path) not in (1, 2):
        raise ConfigurationError(
            f"a Sentinel URL is redis+sentinel://host:port,host:port/<service>[/<db>], got"
            f" {redact(parts.geturl())}"
        )
    if parts.password is not None:
        connection["password"] = unquote(parts.password)
    if parts.username:
        connection["username"] = unquote(parts.username)
    connection["db"] = int(path[1]) if len(path) == 2 else 0
    timeouts = {k: connection[k] for k in ("socket_timeout", "socket_connect_timeout")}
    manager = Sentinel(sentinels, sentinel_kwargs=timeouts)  # type: ignore[no-untyped-call]
    return SentinelConnectionPool(path[0], manager, **connection)  # type: ignore[no-untyped-call]
