"""The schema marker: a durable fanout exchange, ``soloist.schema.<version>``, named for
the version of the queue layout this package declares (lanes, dead-letter stores, delay
queues, the headers they carry). A broker declares it before its first call.

A later layout supersedes an earlier one by declaring the earlier marker as a ``headers``
exchange; this version's declaration of it as ``fanout`` is then refused (406
PRECONDITION_FAILED), and so is the later one's over an earlier marker still in use. An
exchange is cluster-wide metadata: reading the marker needs no queue, so it works with
any node of a cluster down (a queue's marker lived on one node, or waited for its
leader)."""

from __future__ import annotations

import pika.exceptions as pe

from ...errors import ConfigurationError
from .browse import admin_channel
from .session import Session

#: The layout of the queues and headers (the package doc).
SCHEMA_VERSION = 1
SCHEMA_EXCHANGE = f"soloist.schema.{SCHEMA_VERSION}"


def claim(s: Session, where: str) -> None:
    """Declare this layout's marker; a `ConfigurationError` where a later layout
    superseded it."""
    with admin_channel(s) as ch:
        try:
            ch.exchange_declare(SCHEMA_EXCHANGE, exchange_type="fanout", durable=True)
        except pe.ChannelClosedByBroker as exc:
            if exc.reply_code != 406:
                raise
            raise ConfigurationError(
                f"RabbitMQ at {where} holds queues of a later schema version (exchange "
                f"{SCHEMA_EXCHANGE} is superseded); this Soloist reads version "
                f"{SCHEMA_VERSION}"
            ) from None
