"""What travels to RabbitMQ: our headers, the URL options, a message to publish."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from ..base import positive_int, seconds, whole

#: Our headers. Counts live in headers because a retried or released message is a new
#: AMQP message, whose quorum `x-delivery-count` starts again at 0.
H_RETRIES = "x-soloist-retries"
H_PRIOR = "x-soloist-prior-deliveries"  # deliveries before this copy was published
H_REASON = "x-soloist-reason"
#: pika cannot encode floats in headers, so times and ttls travel as repr() strings.
H_DEAD_AT = "x-soloist-dead-at"
H_COUNT = "x-soloist-delivery-count"
H_WORKER = "x-soloist-worker"
H_SEEN = "x-soloist-seen"
H_TTL = "x-soloist-ttl"
H_GONE = "x-soloist-gone"
#: Headers RabbitMQ adds, which must not follow a copy we publish again.
SERVER_HEADERS = frozenset(
    {
        "x-delivery-count",
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
    }
)
#: The queue of worker heartbeats.
WORKERS_QUEUE = "soloist.workers"


#: URL query options of ours; the rest go to pika.URLParameters (heartbeat, …).
OPTIONS: dict[str, Callable[[str], Any]] = {
    "max_deliveries": positive_int,
    "max_priority": whole(0, 255),
    "queue_expires": seconds,
    "publish_timeout": seconds,
    "ssl_ca_certs": str,
}
#: How long `publish` and operator calls wait for a lost connection to come back.
DEFAULT_PUBLISH_TIMEOUT = 30.0


class Out(NamedTuple):
    """A message to publish: `lane` is its work queue, reached after `delay` seconds."""

    queue: str
    lane: str
    body: bytes
    message_id: str
    headers: dict[str, Any]
    delay: float = 0


def bucket_ms(seconds: float) -> int:
    """`seconds` as whole milliseconds rounded up to two significant digits."""
    ms = max(1, math.ceil(seconds * 1000))
    step = int(10 ** max(0, len(str(ms)) - 2))
    return -(-ms // step) * step
