"""Adaptive prefetch: how many deliveries a worker asks the broker for at a time."""

from __future__ import annotations

from .constants import AUTO_PREFETCH, PREFETCH_HORIZON


class Prefetch:
    """Hold about PREFETCH_HORIZON seconds of work: start at the pool's concurrency and,
    judged by each task's run time, double up to AUTO_PREFETCH (or `fixed`, which the
    prefetch never leaves when given: `--prefetch N`)."""

    def __init__(self, fixed: int | None, concurrency: int) -> None:
        self.adaptive = fixed is None
        self.floor = concurrency
        self.ceiling = max(fixed or AUTO_PREFETCH, concurrency)
        #: How many deliveries to fetch now.
        self.size = concurrency if self.adaptive else self.ceiling

    def ran(self, runtime: float) -> bool:
        """Adapt to a task that ran `runtime` seconds. True when it ran longer than the
        horizon: the worker then gives back what it prefetched, for other workers."""
        if not self.adaptive or (
            self.size == self.ceiling and runtime * self.ceiling <= PREFETCH_HORIZON
        ):
            return False  # fixed, or already as high as it goes and the task was short
        fits = int(PREFETCH_HORIZON / max(runtime, 1e-6))
        self.size = max(self.floor, min(self.size * 2, fits, self.ceiling))
        return runtime > PREFETCH_HORIZON
