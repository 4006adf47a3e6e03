"""Celery's remote control, the part Soloist workers answer: `revoke`.

`celery control revoke ID [--terminate]` and `AsyncResult.revoke()` broadcast on the
`<control_exchange>.pidbox` fanout exchange, which kombu's Redis transport carries as a
PUBLISH on the channel `<global_keyprefix>/<db>.celery.pidbox`. A Soloist worker
subscribes to it from its keeper thread (the revocation sync, every half second) and
hands the revoked ids to the worker's revocation set; other commands are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import redis

from ..errors import DecodeError
from . import protocol

log = logging.getLogger("soloist.celery")


class Pidbox:
    """A subscription to Celery's broadcast channel on the broker's Redis."""

    def __init__(self, redis_url: str, channel: str, accept: Collection[str]) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.channel = channel
        self.accept = accept
        self._pubsub: Any = None

    def revoked(self) -> list[tuple[str, bool]]:
        """(task id, terminate) of each revoke heard since the last call."""
        if self._pubsub is None:
            self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(self.channel)
        got: list[tuple[str, bool]] = []
        while (message := self._pubsub.get_message(timeout=0)) is not None:
            if message.get("type") == "message":
                got += self._decode(message["data"])
        return got

    def _decode(self, raw: bytes) -> list[tuple[str, bool]]:
        try:
            env = protocol.envelope(raw)
            command = protocol.body(env, self.accept)
        except DecodeError as exc:
            log.warning("unreadable control message: %s", exc)
            return []
        if not isinstance(command, dict) or command.get("method") != "revoke":
            return []
        args = command.get("arguments") or {}
        ids = args.get("task_id")
        ids = [ids] if isinstance(ids, str) else list(ids or ())
        return [(str(i), bool(args.get("terminate"))) for i in ids]

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
        self.client.close()
