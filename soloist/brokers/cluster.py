"""Redis Cluster: `redis+cluster://h1:7000,h2:7001/`, through redis-py's RedisCluster.

The URL names one or more nodes of the cluster; the client asks them for the rest and for
which node serves which hash slot, follows MOVED/ASK redirects, and finds the slots again
after a failover or a resharding.

A Lua script may only touch keys of one hash slot, so on a cluster every key name carries
a hash tag (Redis hashes only the part between the first `{` and the next `}`): the keys a
script touches together share one. `tagged` builds the key prefix of a tag; the scripts
take it as their prefix (ARGV[1]) and, as KEYS[1], it routes the call to its slot's node.
On a single server the tag is dropped, so the key schema there is unchanged.

Tags: a queue's keys (its sorted sets, wake list, counters and messages) are tagged
`q:<queue>`, so each queue lives whole on one shard and queues spread over the shards; a
queue whose name carries a hash tag of its own (`{mail}high`, `{mail}low`) is tagged
`q:<that tag>`, which puts queues fetched together in one slot. The worker registry is
tagged `workers`; results, each task's own (see results/redis.py).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, unquote

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, MovedError, RedisClusterException, SlotNotCoveredError

from ..errors import ConfigurationError
from ..urls import redact

SCHEMES = ("redis+cluster",)

#: The tag of the worker registry's keys (`workers`, `w:<id>`).
WORKERS_TAG = "workers"

_HASH_TAG = re.compile(r"\{([^}]+)\}")


def tagged(prefix: str, tag: str) -> str:
    """The key prefix of the keys tagged `tag` on a cluster: `soloist:{q:mail}:`."""
    return f"{prefix}{{{tag}}}:"


def queue_tag(queue: str) -> str:
    """The tag of `queue`'s keys: `q:` and the queue's own hash tag if its name has one,
    else its name."""
    own = _HASH_TAG.search(queue)
    return f"q:{own.group(1) if own else queue}"


def cluster_client(
    parts: SplitResult, query: dict[str, str], **connection: Any
) -> Callable[[], RedisCluster]:
    """Makes a client of the cluster the URL's nodes belong to (which connects to them at
    once); the URL is checked here, before anything connects."""
    where = parts.netloc.rpartition("@")[2]
    try:
        nodes = [
            ClusterNode(*((host, int(port)) if sep else (port, 6379)))  # type: ignore[no-untyped-call]
            for host, sep, port in (item.rpartition(":") for item in where.split(","))
        ]
    except ValueError:
        raise ConfigurationError(f"bad Cluster address in {redact(parts.geturl())}") from None
    if not all(node.host for node in nodes) or parts.path.strip("/"):
        raise ConfigurationError(
            "a Cluster URL is redis+cluster://host:port,host:port/ (a cluster has one"
            f" database), got {redact(parts.geturl())}"
        )
    if parts.password is not None:
        connection["password"] = unquote(parts.password)
    if parts.username:
        connection["username"] = unquote(parts.username)
    for name in query:
        raise ConfigurationError(f"unknown option {name} in {redact(parts.geturl())}")
    return functools.partial(RedisCluster, startup_nodes=nodes, **connection)


#: Commands whose first argument is their first key: sent straight to its slot's node.
_FIRST_KEY = frozenset({"BLPOP", "BLMOVE", "DEL", "GET", "HMGET", "SET", "ZREM"})


class ClusterLink:
    """`RedisConnection.execute` on a cluster: each command sent to its slot's node, in one
    round trip per node; a reply that is an error comes back as the ResponseError.

    A lone command with a key (the scripts, BLPOP, the store's reads) is written straight
    to a connection of redis-py's pool for the node that redis-py's slot table names, as
    RedisConnection does on one server: redis-py's own command path costs about 70 µs of
    client CPU more a call (benchmarks/cluster_bench.py). Anything else, a command whose
    slot moved (MOVED/ASK: it did not run), and every command after a lost link until one
    gets through go redis-py's way, which follows redirects and finds the slots again."""

    def __init__(self) -> None:
        self._direct = True

    def execute(self, client: Any, commands: tuple[tuple[object, ...], ...]) -> list[Any]:
        try:
            if len(commands) == 1:
                key = _key(commands[0]) if self._direct else None
                if key is not None:
                    reply = self._send(client, key, commands[0])
                    if not isinstance(reply, (MovedError, AskError)):
                        return [reply]
                try:
                    replies = [client.execute_command(*commands[0])]
                except redis.ResponseError as exc:
                    replies = [exc]
            else:
                pipe = client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)
                replies = list(pipe.execute(raise_on_error=False))
        except SlotNotCoveredError as exc:
            # No node serves the slot now (one is down): worth waiting for, as a lost link is.
            raise redis.ConnectionError(str(exc)) from None
        except RedisClusterException as exc:
            raise redis.ResponseError(str(exc)) from None
        self._direct = True
        return replies

    def _send(self, client: Any, key: object, command: tuple[object, ...]) -> Any:
        pool = client.get_node_from_key(key).redis_connection.connection_pool
        try:
            conn = pool.get_connection()  # connects a new one: the node may be gone
        except (redis.ConnectionError, redis.TimeoutError):
            self._direct = False
            raise
        try:
            conn.send_packed_command(conn.pack_command(*command))
            try:
                return conn.read_response()
            except redis.ResponseError as exc:
                return exc
        except BaseException as exc:
            # A reply may be left unread: close the link, as RedisConnection.execute does.
            conn.disconnect()
            if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
                self._direct = False  # the node may be gone: redis-py's way finds out
            raise
        finally:
            pool.release(conn)


def _key(command: tuple[object, ...]) -> object | None:
    name = str(command[0]).upper()
    if name in ("EVALSHA", "EVAL"):
        return command[3] if int(str(command[2])) > 0 else None
    return command[1] if name in _FIRST_KEY else None
