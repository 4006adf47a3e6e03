"""Celery's remote control, the part Soloist workers answer: `revoke`.

`celery control revoke ID [--terminate]` and `AsyncResult.revoke()` broadcast on the
`<control_exchange>.pidbox` fanout exchange, which kombu's Redis transport carries as a
PUBLISH on the channel `<global_keyprefix>/<db>.celery.pidbox`, and RabbitMQ as a fanout
exchange. A Soloist worker
subscribes to it from its keeper thread (the revocation sync, every half second) and
hands the revoked ids to the worker's revocation set; other commands are ignored.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection
from typing import Any

import amqp
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
        except DecodeError as exc:
            log.warning("unreadable control message: %s", exc)
            return []
        return _revokes(env, self.accept)

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
        self.client.close()


def _revokes(env: dict[str, Any], accept: Collection[str]) -> list[tuple[str, bool]]:
    """(task id, terminate) of a control message if it is a revoke."""
    try:
        command = protocol.body(env, accept)
    except DecodeError as exc:
        log.warning("unreadable control message: %s", exc)
        return []
    if not isinstance(command, dict) or command.get("method") != "revoke":
        return []
    args = command.get("arguments") or {}
    ids = args.get("task_id")
    ids = [ids] if isinstance(ids, str) else list(ids or ())
    return [(str(i), bool(args.get("terminate"))) for i in ids]


class AMQPPidbox:
    """The same, on RabbitMQ: an exclusive queue bound to the `…pidbox` fanout exchange,
    declared as kombu's Mailbox declares it, read without blocking."""

    def __init__(self, params: dict[str, Any], exchange: str, accept: Collection[str]) -> None:
        self.params = params
        self.exchange = exchange
        self.accept = accept
        self._conn: Any = None
        self._got: list[Any] = []

    def revoked(self) -> list[tuple[str, bool]]:
        try:
            return self._revoked()
        except (OSError, amqp.exceptions.ConnectionError):
            self.close()  # reconnects on the next call
            raise

    def _revoked(self) -> list[tuple[str, bool]]:
        if self._conn is None:
            # Read twice a second by the keeper: no heartbeats needed to stay connected.
            self._conn = amqp.Connection(**{**self.params, "heartbeat": 0})
            self._conn.connect()
            channel = self._conn.channel()
            channel.exchange_declare(self.exchange, "fanout", durable=False, auto_delete=False)
            queue = channel.queue_declare("", exclusive=True, auto_delete=True).queue
            channel.queue_bind(queue, self.exchange, "")
            channel.basic_consume(queue, callback=self._got.append, no_ack=True)
        with contextlib.suppress(TimeoutError):
            while True:
                self._conn.drain_events(timeout=0.001)
        got = self._got[:]
        del self._got[:]  # in place: the consumer's callback appends to this very list
        out: list[tuple[str, bool]] = []
        for message in got:
            env = {
                "body": message.body,  # text or bytes: kombu's loads takes either
                "content-type": message.properties.get("content_type"),
                "content-encoding": message.properties.get("content_encoding"),
                "properties": {},
            }
            out += _revokes(env, self.accept)
        return out

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
