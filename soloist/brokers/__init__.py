"""Brokers by URL scheme. Each broker is one module implementing `base.Broker`."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import DEFAULT_MAX_DELIVERIES, Broker, DeadLetter, Delivery
from .memory import MemoryBroker
from .sqlite import SQLiteBroker

__all__ = ["Broker", "DeadLetter", "Delivery", "from_url"]


def from_url(url: str, max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> Broker:
    """Build the broker a URL names, without connecting yet where that can wait."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBroker(url, max_deliveries)
    if scheme == "sqlite":
        return SQLiteBroker(url, max_deliveries)
    if scheme in ("redis", "rediss", "redis+sentinel"):
        from .redis import RedisBroker  # here: redis-py is an optional extra

        return RedisBroker(url, max_deliveries)
    if scheme == "redis+cluster":
        from .redis_cluster import RedisClusterBroker  # here: redis-py is an optional extra

        return RedisClusterBroker(url, max_deliveries)
    if scheme in ("celery+redis", "celery+rediss"):
        # Celery's kombu layout: only Celery apps use it, and it needs the celery extra.
        from ..celery.broker import KombuRedisBroker

        return KombuRedisBroker(url, max_deliveries)
    if scheme in ("celery+amqp", "celery+pyamqp"):
        # Celery's RabbitMQ queues, for Celery apps: the celery extra.
        from ..celery.amqp import CeleryAMQPBroker

        return CeleryAMQPBroker(url, max_deliveries)
    if scheme in ("amqp", "amqps"):
        from .amqp import AMQPBroker  # here: pika is an optional extra

        return AMQPBroker(url, max_deliveries)
    raise ConfigurationError(
        f"unknown broker URL scheme {scheme!r} (use memory://, sqlite:///path, redis://, amqp://)"
    )
