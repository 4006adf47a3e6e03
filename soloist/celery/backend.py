"""Celery's Redis result backend, with SUCCESS records handed to the worker to store.

Celery's backend stores each result with two round trips (a GET to see whether a SUCCESS
is there already, then SET and PUBLISH): on a no-op task that is most of the cost. While
a Soloist worker runs a task, this subclass builds the SUCCESS record exactly as Celery
does (`_get_result_meta`: children, group and parent ids, the extended fields) and hands
it to the worker instead, which stores the records of a batch of tasks in one script call
before acking their messages (`CeleryResults.put_many`: SET, PUBLISH, and no overwriting
of a final state, checked in Redis). Every other write (STARTED, RETRY, FAILURE, custom
states from `update_state`, chords' counters) goes straight through Celery's code.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import states
from celery.backends.redis import RedisBackend


class Deferred(threading.local):
    """The record a task's run left to store, per thread (the threads pool)."""

    active: bool = False
    record: tuple[str, bytes] | None = None


class DeferringRedisBackend(RedisBackend):  # type: ignore[misc]
    """A RedisBackend whose SUCCESS records wait for the worker, inside `deferring()`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deferred = Deferred()

    @contextmanager
    def deferring(self) -> Iterator[Deferred]:
        """Within the block, a SUCCESS record is left in the yielded object's `record`."""
        self.deferred.active, self.deferred.record = True, None
        try:
            yield self.deferred
        finally:
            self.deferred.active = False

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        if state != states.SUCCESS or not self.deferred.active:
            return super()._store_result(task_id, result, state, traceback, request, **kwargs)
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = str(task_id)
        body = self.encode(meta)
        self.deferred.record = (str(task_id), body.encode() if isinstance(body, str) else body)
        return result
