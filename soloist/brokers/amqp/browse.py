"""Operator channels: a short-lived admin channel, the cross-process browse lock
(``<name>.lock``, an exclusive queue) and basic.get browsing under it, as used to read
``Q.dead`` and ``soloist.workers`` without two operators hiding messages from each other."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel

from .session import Session


@contextmanager
def admin_channel(s: Session) -> Iterator[BlockingChannel]:
    """A short-lived channel: closing it returns whatever basic.get took and did not
    ack, and a 404 on it harms nothing else."""
    ch = s.conn.channel()
    try:
        yield ch
    finally:
        if ch.is_open:
            ch.close()


@contextmanager
def locked(
    s: Session, name: str, timeout: float, transactional: bool = False
) -> Iterator[BlockingChannel]:
    """An admin channel, with the cross-process lock of `name` held (waiting up to
    `timeout` seconds for another holder to let go). `transactional`: its publishes and
    acks take effect at its commits (the caller's, and one for the give-back here)."""
    lock, deadline = f"{name}.lock", time.monotonic() + timeout
    while True:
        with admin_channel(s) as ch:
            try:
                ch.queue_declare(lock, exclusive=True)
            except pe.ChannelClosedByBroker as exc:
                # 405 RESOURCE_LOCKED: another connection holds it.
                if exc.reply_code != 405 or time.monotonic() > deadline:
                    raise
            else:
                try:
                    if transactional:
                        ch.tx_select()
                    yield ch
                    # Give back what was browsed and not acked while still holding the
                    # lock, or the next holder may not see it; the synchronous qos (or
                    # commit) returns once the server has handled the acks and the nack.
                    ch.basic_nack(delivery_tag=0, multiple=True, requeue=True)
                    if transactional:
                        ch.tx_commit()
                    else:
                        ch.basic_qos(prefetch_count=0)
                finally:
                    # The lock lives as long as our connection: always delete it.
                    if ch.is_open:
                        ch.queue_delete(lock)
                    else:
                        with admin_channel(s) as spare:
                            spare.queue_delete(lock)
                return
        s.conn.process_data_events(time_limit=0.02)  # keep heartbeats going meanwhile


def browse(ch: BlockingChannel, name: str, limit: int) -> Iterator[tuple[int, Any, bytes]]:
    """basic.get up to `limit` messages: (delivery tag, properties, body); `locked`
    returns those not acked."""
    for _ in range(limit):
        method, props, body = ch.basic_get(name)
        if method is None:
            return
        yield method.delivery_tag, props, body
