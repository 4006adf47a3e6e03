"""Pools by name. Each pool is one module implementing `base.Pool`."""

from __future__ import annotations

from ..errors import ConfigurationError
from .base import Pool, RunnerFactory
from .processes import ProcessPool
from .solo import SoloPool
from .threads import ThreadPool

NAMES = ("solo", "threads", "processes")


def create(
    name: str,
    make_runner: RunnerFactory,
    concurrency: int = 1,
    *,
    max_tasks: int | None = None,
    max_memory: float | None = None,
) -> Pool:
    """The pool called `name`, running up to `concurrency` tasks at once, its processes
    recycled after `max_tasks` tasks or past `max_memory` MB."""
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be at least 1, not {concurrency}")
    if name == "solo":
        return SoloPool(make_runner, max_tasks=max_tasks, max_memory=max_memory)
    if name == "threads":
        return ThreadPool(make_runner, concurrency, max_tasks=max_tasks, max_memory=max_memory)
    if name == "processes":
        return ProcessPool(make_runner, concurrency, max_tasks=max_tasks, max_memory=max_memory)
    raise ConfigurationError(f"unknown pool {name!r} (choose {', '.join(NAMES)})")
