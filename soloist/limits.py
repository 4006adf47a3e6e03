"""Limits that hold across the cluster: rate limits, concurrency limits, unique sends.

Each is kept in the result store, which every worker shares (SQLite, Redis; on RabbitMQ
the result store is the shared state), through its coordination primitives:

* `rate_limit="10/s"` (`/s`, `/m`, `/h`): a sliding window of starts per task name
  (`ResultStore.take_token`). A task over the limit is not run: its message is put back
  with a countdown until a token frees (without counting a retry), so the worker goes on
  with other tasks and holds no lease on it while it waits.
* `max_concurrency=N`: a leased semaphore per task name, or per `concurrency_key(*args,
  **kwargs)` (`ResultStore.acquire_slot`). The keeper renews the slots of running tasks;
  a slot whose worker was killed frees itself SLOT_LEASE seconds later. A task that finds
  no free slot is put back for a short, jittered while, as above.
* `unique_for=seconds`: a send while an earlier one (same task, same `unique_key(*args,
  **kwargs)` if given) is queued or running, within the window, sends nothing and returns
  the earlier one's handle (`ResultStore.claim`). The claim ends when that task ends.

A task with none of these has `Task.limits` None, and the worker checks only that.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError
from .results.base import ResultStore

#: How long a concurrency slot lasts without renewal: the keeper renews those of running
#: tasks every SLOT_RENEW seconds, so a slot held by a killed worker frees within this.
SLOT_LEASE = 30.0
SLOT_RENEW = SLOT_LEASE / 3
#: A task with no free concurrency slot is put back for up to this long (jittered).
SLOT_RETRY = 1.0

_RATE = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}

KeyFunction = Callable[..., str]


def parse_rate(text: str) -> tuple[int, float]:
    """`"100/m"` -> (100, 60.0)."""
    match = _RATE.match(text)
    if match is None or int(match[1]) < 1:
        raise ConfigurationError(f"bad rate limit {text!r}: expected N/s, N/m or N/h, N >= 1")
    return int(match[1]), _PER[match[2]]


@dataclass(frozen=True)
class Limits:
    """A task's limits, checked by workers (rate, concurrency) and producers (unique)."""

    task: str
    rate: tuple[int, float] | None = None
    max_concurrency: int | None = None
    concurrency_key: KeyFunction | None = None
    unique_for: float | None = None
    unique_key: KeyFunction | None = None

    @classmethod
    def of(
        cls,
        task: str,
        rate_limit: str | None,
        max_concurrency: int | None,
        concurrency_key: KeyFunction | None,
        unique_for: float | None,
        unique_key: KeyFunction | None,
    ) -> Limits | None:
        """A task's limits, or None when it has none (the only thing workers then check)."""
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigurationError(f"task {task}: max_concurrency must be 1 or more")
        if concurrency_key is not None and max_concurrency is None:
            raise ConfigurationError(f"task {task}: concurrency_key needs max_concurrency")
        if unique_for is not None and unique_for <= 0:
            raise ConfigurationError(f"task {task}: unique_for must be over 0 seconds")
        if unique_key is not None and unique_for is None:
            raise ConfigurationError(f"task {task}: unique_key needs unique_for")
        rate = None if rate_limit is None else parse_rate(rate_limit)
        if rate is None and max_concurrency is None and unique_for is None:
            return None
        return cls(task, rate, max_concurrency, concurrency_key, unique_for, unique_key)

    @property
    def gated(self) -> bool:
        """Whether a worker must ask the store before running the task."""
        return self.rate is not None or self.max_concurrency is not None

    def slot_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        suffix = "" if self.concurrency_key is None else self.concurrency_key(*args, **kwargs)
        return f"concurrency:{self.task}:{suffix}"

    def unique(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        suffix = "" if self.unique_key is None else self.unique_key(*args, **kwargs)
        return f"unique:{self.task}:{suffix}"

    def admit(
        self, store: ResultStore, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> float:
        """Before a run: take a concurrency slot, then a rate token. 0 when the task may
        run now, else the seconds to put it back for (holding neither)."""
        slot = None
        if self.max_concurrency is not None:
            slot = self.slot_key(args, kwargs)
            if not store.acquire_slot(slot, task_id, self.max_concurrency, SLOT_LEASE):
                return random.uniform(SLOT_RETRY / 2, SLOT_RETRY)
        if self.rate is not None:
            wait = store.take_token(f"rate:{self.task}", *self.rate)
            if wait > 0:
                if slot is not None:
                    store.release_slot(slot, task_id)
                # Spread over one token's interval: tasks held back together do not all
                # come back at the instant the window frees, to be held back again.
                return wait + random.uniform(0, self.rate[1] / self.rate[0])
        return 0.0

    def finish(
        self,
        store: ResultStore,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        final: bool,
    ) -> None:
        """After a run: free the slot; once the task is over for good, its unique claim."""
        if self.max_concurrency is not None:
            store.release_slot(self.slot_key(args, kwargs), task_id)
        if final and self.unique_for is not None:
            store.swap(self.unique(args, kwargs), task_id, None, self.unique_for)
