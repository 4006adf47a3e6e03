"""The schema marker: ``soloist.schema``, a durable queue whose one message names the
version of the queue layout this package declares (lanes, dead-letter stores, delay
queues, the headers they carry). A broker reads it before its first call and stamps it
on a virtual host that has none."""

from __future__ import annotations

import pika

from .browse import admin_channel
from .session import Session

#: The layout of the queues and headers (the package doc), as the marker holds it.
SCHEMA_VERSION = 1
SCHEMA_QUEUE = "soloist.schema"


def read_or_stamp(s: Session, version: int) -> bytes:
    """The version the marker holds, after stamping `version` where there is none."""
    with admin_channel(s) as ch:
        ch.queue_declare(SCHEMA_QUEUE, durable=True)
        method, _, body = ch.basic_get(SCHEMA_QUEUE)  # not acked: back when `ch` closes
        if method is not None:
            return bytes(body)
    stamp = str(version).encode()
    props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    s.pub.basic_publish("", SCHEMA_QUEUE, stamp, props, mandatory=True)
    return stamp
