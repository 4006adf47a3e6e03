"""Result stores by URL scheme. Each store is one module implementing `base.ResultStore`."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import (
    FAILURE,
    FINAL_STATES,
    PENDING,
    RETRY,
    REVOKED,
    STARTED,
    SUCCESS,
    ResultStore,
)
from .memory import MemoryResultStore
from .sqlite import SQLiteResultStore

__all__ = [
    "FAILURE",
    "FINAL_STATES",
    "PENDING",
    "RETRY",
    "REVOKED",
    "SCHEMES",
    "STARTED",
    "SUCCESS",
    "ResultStore",
    "from_url",
]

#: URL schemes a result store exists for. A broker URL of one of these can keep results too.
SCHEMES = ("memory", "sqlite", "redis", "rediss", "redis+sentinel", "redis+cluster")


def from_url(url: str) -> ResultStore:
    """Build the result store a URL names."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryResultStore(url)
    if scheme == "sqlite":
        return SQLiteResultStore(url)
    if scheme in ("celery+redis", "celery+rediss"):
        # Celery's result format: only Celery apps use it, and it needs the celery extra.
        from ..celery.results import CeleryResults

        return CeleryResults(url)
    if scheme in ("redis", "rediss", "redis+sentinel", "redis+cluster"):
        from .redis import RedisResultStore  # here: redis-py is an optional extra

        return RedisResultStore(url)
    raise ConfigurationError(
        f"unknown result store URL scheme {scheme!r} (use memory://, sqlite:///path, redis://)"
    )
