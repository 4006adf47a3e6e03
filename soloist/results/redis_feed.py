"""Whether the Redis revocation counter may have moved, known without asking Redis.

Logging a revocation publishes on the channel `<prefix>revoked:moved` (results/redis.py).
A worker's feed subscribes once; then each revocation sync reads the subscription's socket
(no call to Redis), and reads the counter again (a GET) only when a message came, when the
subscription is new (after its first start or a lost connection), or every RECHECK seconds.
The recheck bounds how late a revocation is seen if the subscription died without its
connection saying so. So an idle worker costs Redis a GET every RECHECK seconds instead of
one per sync (two a second). A revoker older than the channel is seen at the recheck.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from typing import Any

import redis

#: The longest the counter goes unread.
RECHECK = 5.0


class RevocationFeed:
    def __init__(self, client: Any, channel: str) -> None:
        self.client = client  # a redis.Redis
        self.channel = channel
        self._pubsub: Any = None
        self._pid = os.getpid()
        self._read_at = -math.inf
        self._lock = threading.Lock()

    def moved(self) -> bool:
        """Whether to read the counter again: a message came since the last call, or
        the subscription is new, or the counter went unread for RECHECK seconds."""
        with self._lock:
            if self._pid != os.getpid():
                self._pubsub, self._pid = None, os.getpid()  # never a parent's socket
            moved = self._drain()
            now = time.monotonic()
            if moved or now - self._read_at >= RECHECK:
                self._read_at = now
                return True
            return False

    def unread(self) -> None:
        """The counter could not be read: the next `moved` says True."""
        self._read_at = -math.inf

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drain(self) -> bool:
        """Whether a message (or a new subscription) came; a failed read drops the feed,
        to subscribe again next time."""
        try:
            if self._pubsub is None:
                pubsub = self.client.pubsub()
                pubsub.subscribe(self.channel)
                self._pubsub = pubsub
                return True
            came = False
            while self._pubsub.get_message(timeout=0.0) is not None:
                came = True
            return came
        except redis.RedisError:
            self._drop()
            return True

    def _drop(self) -> None:
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            with contextlib.suppress(redis.RedisError):  # a connection gone already
                pubsub.close()
