"""Celery's remote control, the part Soloist workers answer: `revoke` and `ping`.

`celery control revoke ID [--terminate]`, `AsyncResult.revoke()` and `celery inspect
ping` broadcast on the `<control_exchange>.pidbox` fanout exchange, which kombu's Redis
transport carries as a PUBLISH on the channel `<global_keyprefix>/<db>.celery.pidbox`,
and RabbitMQ as a fanout exchange. A Soloist worker reads it from its keeper thread
(the revocation sync, every half second): revoked ids go to the worker's revocation
set, a ping is answered `pong` on the reply exchange the command names (as `NODE`, see
`node_name`). Other commands get no answer.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Collection
from typing import Any

import amqp
import redis
from kombu.utils.json import dumps

from ..errors import DecodeError
from . import protocol

log = logging.getLogger("soloist.celery")

#: Celery's replies go to this direct exchange, routed to the asking client's queue.
REPLY_EXCHANGE = "reply.celery.pidbox"
SEP = "\x06\x16"


def node_name() -> str:
    """How this worker process names itself to Celery's remote control."""
    return f"soloist.{os.getpid()}@{socket.gethostname()}"


def _command(env: dict[str, Any], accept: Collection[str]) -> dict[str, Any] | None:
    try:
        command = protocol.body(env, accept)
    except DecodeError as exc:
        log.warning("unreadable control message: %s", exc)
        return None
    return command if isinstance(command, dict) else None


def _revokes(command: dict[str, Any]) -> list[tuple[str, bool]]:
    """(task id, terminate) of a revoke command."""
    args = command.get("arguments") or {}
    ids = args.get("task_id")
    ids = [ids] if isinstance(ids, str) else list(ids or ())
    return [(str(i), bool(args.get("terminate"))) for i in ids]


def _for_me(command: dict[str, Any]) -> bool:
    destination = command.get("destination")
    return not destination or node_name() in destination


def _pong(command: dict[str, Any]) -> tuple[str, bytes, dict[str, Any]] | None:
    """(routing key, body, headers) of the reply to a ping meant for this worker."""
    reply_to = command.get("reply_to") or {}
    if command.get("method") != "ping" or not _for_me(command) or not reply_to:
        return None
    body = dumps({node_name(): {"ok": "pong"}}).encode()
    return str(reply_to.get("routing_key")), body, {"ticket": command.get("ticket")}


class Pidbox:
    """Celery's broadcast channel on the broker's Redis (pub/sub)."""

    def __init__(self, redis_url: str, channel: str, prefix: str, accept: Collection[str]):
        self.client = redis.Redis.from_url(redis_url)
        self.channel = channel
        self.prefix = prefix
        self.accept = accept
        self._pubsub: Any = None

    def revoked(self) -> list[tuple[str, bool]]:
        """(task id, terminate) of each revoke heard since the last call; pings answered."""
        if self._pubsub is None:
            self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(self.channel)
        got: list[tuple[str, bool]] = []
        while (message := self._pubsub.get_message(timeout=0)) is not None:
            if message.get("type") != "message":
                continue
            try:
                command = _command(protocol.envelope(message["data"]), self.accept)
            except DecodeError as exc:
                log.warning("unreadable control message: %s", exc)
                continue
            if command is None:
                continue
            if command.get("method") == "revoke" and _for_me(command):
                got += _revokes(command)
            elif (pong := _pong(command)) is not None:
                self._reply(*pong)
        return got

    def _reply(self, routing_key: str, body: bytes, headers: dict[str, Any]) -> None:
        """LPUSH the reply onto every queue kombu bound to the reply exchange with this
        routing key, as kombu's direct exchange does on Redis."""
        bound = self.client.smembers(f"{self.prefix}_kombu.binding.{REPLY_EXCHANGE}")
        rows = [(m.decode() if isinstance(m, bytes) else str(m)).split(SEP) for m in bound]
        queues = [row[2] for row in rows if len(row) == 3 and row[0] == routing_key]
        envelope = dumps(
            {
                "body": base64.b64encode(body).decode(),
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": headers,
                "properties": {
                    "delivery_mode": 1,
                    "delivery_info": {"exchange": REPLY_EXCHANGE, "routing_key": routing_key},
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": str(uuid.uuid4()),
                },
            }
        )
        for queue in queues:
            self.client.lpush(f"{self.prefix}{queue}", envelope)

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
        self.client.close()


class AMQPPidbox:
    """The same on RabbitMQ: an exclusive queue bound to the `…pidbox` fanout exchange,
    declared as kombu's Mailbox declares it, read without blocking."""

    def __init__(self, params: dict[str, Any], exchange: str, accept: Collection[str]) -> None:
        self.params = params
        self.exchange = exchange
        self.accept = accept
        self._conn: Any = None
        self._channel: Any = None
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
            channel = self._channel = self._conn.channel()
            channel.exchange_declare(self.exchange, "fanout", durable=False, auto_delete=False)
            queue = channel.queue_declare("", exclusive=True, auto_delete=True).queue
            channel.queue_bind(queue, self.exchange, "")
            channel.basic_consume(queue, callback=self._got.append, no_ack=True)
        with contextlib.suppress(TimeoutError):
            while True:
                self._conn.drain_events(timeout=0.001)
        got = self._got[:]
        del self._got[:]  # in place: the consumer's callback appends to this very list
        revoked: list[tuple[str, bool]] = []
        for message in got:
            env = {
                "body": message.body,  # text or bytes: kombu's loads takes either
                "content-type": message.properties.get("content_type"),
                "content-encoding": message.properties.get("content_encoding"),
                "properties": {},
            }
            command = _command(env, self.accept)
            if command is None:
                continue
            if command.get("method") == "revoke" and _for_me(command):
                revoked += _revokes(command)
            elif (pong := _pong(command)) is not None:
                routing_key, body, headers = pong
                reply = amqp.Message(
                    body,
                    content_type="application/json",
                    content_encoding="utf-8",
                    application_headers=headers,
                )
                self._channel.basic_publish(reply, REPLY_EXCHANGE, routing_key)
        return revoked

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
