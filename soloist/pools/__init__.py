"""Pools by name. Each pool is one module implementing `base.Pool`."""

from __future__ import annotations

from ..errors import ConfigurationError
from .base import ExecutorFactory, Pool

NAMES = ("solo", "threads", "processes")


def create(name: str, make_executor: ExecutorFactory, concurrency: int = 1) -> Pool:
    """The pool called `name`, running up to `concurrency` tasks at once."""
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be at least 1, not {concurrency}")
    if name == "solo":
        from .solo import SoloPool

        return SoloPool(make_executor)
    if name == "threads":
        from .threads import ThreadPool

        return ThreadPool(make_executor, concurrency)
    raise ConfigurationError(f"unknown pool {name!r} (choose {', '.join(NAMES)})")
