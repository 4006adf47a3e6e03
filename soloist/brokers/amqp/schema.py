"""The schema marker: ``soloist.schema``, a quorum queue whose one message names the
version of the queue layout this package declares (lanes, dead-letter stores, delay
queues, the headers they carry). A broker reads it before its first call and stamps it
on a virtual host that has none. Quorum, as the lanes are: a classic queue lives on one
node of a cluster, and with that node down no broker could start."""

from __future__ import annotations

import pika
import pika.exceptions as pe

from .browse import admin_channel
from .session import Session

#: The layout of the queues and headers (the package doc), as the marker holds it.
SCHEMA_VERSION = 1
SCHEMA_QUEUE = "soloist.schema"
QUORUM = {"x-queue-type": "quorum"}


def read_or_stamp(s: Session, version: int) -> bytes:
    """The version the marker holds, after stamping `version` where there is none.

    The marker is looked up passively: reading it asserts nothing about how it was
    declared, and only a virtual host without one declares it."""
    with admin_channel(s) as ch:
        try:
            ch.queue_declare(SCHEMA_QUEUE, passive=True)
        except pe.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:  # NOT_FOUND: a virtual host never stamped
                raise
            with admin_channel(s) as fresh:
                fresh.queue_declare(SCHEMA_QUEUE, durable=True, arguments=QUORUM)
        else:
            method, _, body = ch.basic_get(SCHEMA_QUEUE)  # not acked: back when `ch` closes
            if method is not None:
                return bytes(body)
    stamp = str(version).encode()
    props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    s.pub.basic_publish("", SCHEMA_QUEUE, stamp, props, mandatory=True)
    return stamp
