"""The result store contract, and the record a finished task leaves in it.

A store keeps one record per task id: its state and the serialized outcome. A final
state (SUCCESS, FAILURE, REVOKED) is never overwritten: a stale worker that finishes a
task after another already did cannot flip the recorded result.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigurationError

PENDING = "PENDING"
#: Recorded when a task that asks for it (`track_started=True`) starts running.
STARTED = "STARTED"
#: Recorded while a retry waits its back-off.
RETRY = "RETRY"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
FINAL_STATES = frozenset({SUCCESS, FAILURE, REVOKED})

#: Results are dropped after a day unless the app says otherwise.
DEFAULT_TTL = 24 * 3600.0


@dataclass(frozen=True)
class Revocation:
    """One entry of a store's revocation log."""

    task_id: str
    #: Unix time of the revocation, by the store's clock where it has one (Redis).
    at: float
    #: Stop the task if it is running, not only skip it if it has not started.
    terminate: bool


class ResultStore(abc.ABC):
    url: str = ""

    @abc.abstractmethod
    def put(self, task_id: str, state: str, body: bytes, ttl: float) -> bool:
        """Record `state` and `body` for `ttl` seconds; False if a final state is already there."""

    def put_many(self, items: Sequence[tuple[str, str, bytes]], ttl: float) -> list[bool]:
        """`put` each (task id, state, body) for `ttl` seconds.

        The default puts one by one; stores that can batch the round trips do."""
        return [self.put(task_id, state, body, ttl) for task_id, state, body in items]

    def put_new(self, task_id: str, state: str, body: bytes, ttl: float) -> bool:
        """Record `state` and `body` for `ttl` seconds only if `task_id` has no record at
        all (an expired one counts as none); False, and nothing changed, if it has one.

        The default reads, then writes; the stores here override it with one atomic step,
        so of two producers sending one task id at once, exactly one wins."""
        return self.get(task_id) is None and self.put(task_id, state, body, ttl)

    @abc.abstractmethod
    def get(self, task_id: str) -> tuple[str, bytes] | None:
        """The record of `task_id`, or None when there is none (pending or expired)."""

    def wait(self, task_id: str, timeout: float | None) -> tuple[str, bytes] | None:
        """Block until `task_id` has a final record or `timeout` passes.

        The default polls with back-off; stores that can be woken override it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while True:
            record = self.get(task_id)
            if record is not None and record[0] in FINAL_STATES:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                return record
            pause = delay if deadline is None else min(delay, deadline - time.monotonic())
            time.sleep(max(pause, 0))
            delay = min(delay * 2, 0.05)

    @abc.abstractmethod
    def revoke(self, task_id: str, body: bytes, ttl: float, terminate: bool = False) -> bool:
        """Record REVOKED with `body` for `task_id` and log the revocation, both for `ttl`
        seconds, atomically. False (and nothing logged) if the task already ended otherwise.

        Revoking again (say with `terminate` now) refreshes the log entry."""

    @abc.abstractmethod
    def revoked_since(self, since: float) -> list[Revocation]:
        """Revocations logged at or after `since` (unix time) and not expired, oldest first.

        Workers poll this with the `at` of the last entry they saw, so their clocks do not
        have to agree with the store's."""

    def revocation_mark(self) -> bytes | None:
        """A value that changes whenever a revocation is logged, cheaper to read than the
        log: workers read the log only when it moved. None: this store cannot tell."""
        return None

    @abc.abstractmethod
    def forget(self, task_id: str) -> None:
        """Drop the record of `task_id`."""

    @abc.abstractmethod
    def forget_if(self, task_id: str, record: tuple[str, bytes]) -> bool:
        """Drop the record of `task_id` only if it is still `record` (state, body), atomically:
        requeueing a dead letter forgets the failure it saw, never a newer result."""

    @abc.abstractmethod
    def chord_add_many(
        self, items: Sequence[tuple[str, int, int, bytes]], ttl: float
    ) -> list[list[bytes] | None]:
        """For each (chord id, index, size, record): record member `index` (of `size`) of
        the chord with its result `record`, for `ttl` seconds, atomically. Adding an index
        again changes nothing, so a member redelivered after a crash is not counted twice.

        Returns, per item, every member's record in index order to the one member whose
        add completed the set (and to that member again if it adds again: it may have
        crashed before sending the callback); None to every other."""

    def chord_add(
        self, chord_id: str, index: int, size: int, record: bytes, ttl: float
    ) -> list[bytes] | None:
        """`chord_add_many` of one member."""
        return self.chord_add_many([(chord_id, index, size, record)], ttl)[0]

    @abc.abstractmethod
    def expire(self) -> int:
        """Drop records past their ttl; returns how many."""

    def close(self) -> None:
        """Release connections."""

    # Coordination: small atomic primitives that periodic tasks (soloist.worker.beat) and
    # cluster-wide limits (soloist.limits) build on. Keys are the callers' own strings;
    # each store keeps them apart from task records. Times are by the store's clock where
    # it has one (Redis), so workers' clocks need not agree.

    #: False for a store only this process can see (memory://): `--beat` refuses it.
    shared: bool = True

    def _cannot_coordinate(self) -> ConfigurationError:
        return ConfigurationError(
            f"the result store {type(self).__name__} keeps no shared state for periodic "
            "tasks and limits: use a sqlite:// or redis:// result store"
        )

    def claim(self, key: str, value: str, ttl: float) -> str | None:
        """Set `key` to `value` for `ttl` seconds unless it holds an unexpired value.

        None when this call set it, else the value in place. Atomic: of any number of
        concurrent claims of a free key, exactly one returns None."""
        raise self._cannot_coordinate()

    def swap(self, key: str, expected: str, value: str | None, ttl: float) -> bool:
        """Replace `key`'s value by `value` (None deletes the key) for `ttl` seconds, only
        if it still holds `expected` unexpired, atomically. False (and nothing changed)
        otherwise."""
        raise self._cannot_coordinate()

    def set_value(self, key: str, value: str, ttl: float) -> None:
        """Set `key` to `value` for `ttl` seconds, whatever it held."""
        raise self._cannot_coordinate()

    def peek(self, key: str) -> str | None:
        """The unexpired value of `key`, or None."""
        raise self._cannot_coordinate()

    def take_token(self, key: str, limit: int, per: float) -> float:
        """A sliding-window rate limit: if fewer than `limit` tokens of `key` were taken in
        the last `per` seconds, take one and return 0; else take none and return the seconds
        until one frees. No window of `per` seconds ever holds more than `limit` tokens."""
        raise self._cannot_coordinate()

    def acquire_slot(self, key: str, holder: str, limit: int, ttl: float) -> bool:
        """A leased semaphore: hold one of `limit` slots of `key` for `holder`, for `ttl`
        seconds. True if held (a holder that already has a slot keeps it, renewed). A slot
        whose holder stops renewing it frees itself when its ttl runs out."""
        raise self._cannot_coordinate()

    def renew_slots(self, slots: Sequence[tuple[str, str]], ttl: float) -> None:
        """Extend each held (key, holder) slot to `ttl` seconds from now; others are left."""
        raise self._cannot_coordinate()

    def release_slot(self, key: str, holder: str) -> None:
        """Free `holder`'s slot of `key`, if it has one."""
        raise self._cannot_coordinate()
