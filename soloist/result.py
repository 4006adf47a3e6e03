"""`Result`: the handle a producer holds for one task call."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from .errors import ConfigurationError, ResultTimeout, TaskError, TaskRevoked
from .results.base import FAILURE, FINAL_STATES, PENDING, REVOKED, SUCCESS

if TYPE_CHECKING:
    from .app import App

R = TypeVar("R")


class Result(Generic[R]):
    """The outcome of a task call, fetched from the app's result store when asked."""

    def __init__(self, app: App, task_id: str, *, ignored: bool = False) -> None:
        self.app = app
        self.id = task_id
        self._ignored = ignored

    def __repr__(self) -> str:
        return f"<Result {self.id} {self.state}>"

    def _record(self) -> dict[str, Any] | None:
        raw = self.app.results.get(self.id)
        return None if raw is None else self._decode(raw)

    def _decode(self, raw: tuple[str, bytes]) -> dict[str, Any]:
        record: dict[str, Any] = self.app.codec.loads(raw[1])
        record["state"] = raw[0]
        return record

    @property
    def state(self) -> str:
        """PENDING, STARTED (for tasks with `track_started`), RETRY, SUCCESS, FAILURE or
        REVOKED."""
        raw = self.app.results.get(self.id)
        return PENDING if raw is None else raw[0]

    def ready(self) -> bool:
        """True once the task has finished, one way or another."""
        return self.state in FINAL_STATES

    def successful(self) -> bool:
        return self.state == SUCCESS

    def get(self, timeout: float | None = None) -> R:
        """Wait for the task's return value.

        Raises `ResultTimeout` if it has not finished within `timeout` seconds, `TaskError`
        (with the remote type, message and traceback) if it failed, `TaskRevoked` if revoked.
        """
        if self._ignored:
            raise ConfigurationError(
                f"task {self.id} was sent with ignore_result: no result to get"
            )
        raw = self.app.results.wait(self.id, timeout)
        if raw is None or raw[0] not in FINAL_STATES:
            raise ResultTimeout(f"task {self.id} did not finish within {timeout}s")
        record = self._decode(raw)
        if record["state"] == SUCCESS:
            return cast(R, record.get("value"))
        if record["state"] == REVOKED:
            why = f" ({record['reason']})" if record.get("reason") else ""
            raise TaskRevoked(f"task {self.id} was revoked{why}")
        assert record["state"] == FAILURE
        raise TaskError(
            record.get("exc_type", "Exception"),
            record.get("message", ""),
            record.get("traceback", ""),
        )

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the task finished; True if it did within `timeout`."""
        raw = self.app.results.wait(self.id, timeout)
        return raw is not None and raw[0] in FINAL_STATES

    def info(self) -> dict[str, Any] | None:
        """The stored record (state, value or error, when finished), or None."""
        return self._record()

    def forget(self) -> None:
        """Drop the stored result."""
        self.app.results.forget(self.id)

    def revoke(self, terminate: bool = False, ttl: float | None = None) -> bool:
        """Cancel the task: workers skip it if it has not started, and record it REVOKED.

        With `terminate`, a worker running it stops it (in every pool; the task sees
        `TaskTerminated` raised, or its thread or process ends). Workers learn of it within
        a second; it holds for `ttl` seconds (the app's result ttl). False if the task had
        already finished, in which case nothing changes.
        """
        record = {"revoked": time.time(), "terminate": terminate}
        body = self.app.codec.dumps(record)
        ttl = self.app.result_ttl if ttl is None else ttl
        return self.app.results.revoke(self.id, body, ttl, terminate)

