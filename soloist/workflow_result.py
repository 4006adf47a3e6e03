"""Handles of workflows: a chain's, a group's and a chord's (see soloist.canvas)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from .errors import ResultTimeout, SoloistError
from .result import Result
from .results.base import FINAL_STATES, SUCCESS

if TYPE_CHECKING:
    from .app import App

R = TypeVar("R")


class ChainResult(Result[R]):
    """The last step's result (`get()` returns its value, or raises the error of the step
    that stopped the chain), knowing every step's id."""

    def __init__(self, app: App, steps: Sequence[str]) -> None:
        super().__init__(app, steps[-1])
        self.steps = [Result[Any](app, task_id) for task_id in steps]

    def revoke(self, terminate: bool = False, ttl: float | None = None) -> bool:
        """Revoke every step: those not started never run, and with `terminate` the one
        running is stopped. True if any step was still to finish."""
        revoked = [step.revoke(terminate, ttl) for step in self.steps]
        return any(revoked)


class GroupResult(Generic[R]):
    """The members' results, in the order the group listed them."""

    def __init__(self, app: App | None, results: Sequence[Result[R]]) -> None:
        self.app = app
        self.results = list(results)

    def __repr__(self) -> str:
        return f"<GroupResult of {len(self.results)}>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[Result[R]]:
        return iter(self.results)

    def __getitem__(self, index: int) -> Result[R]:
        return self.results[index]

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.results]

    def _states(self) -> list[str]:
        return [r.state for r in self.results]

    def ready(self) -> bool:
        """True once every member has finished, one way or another."""
        return all(state in FINAL_STATES for state in self._states())

    def completed_count(self) -> int:
        """How many members succeeded."""
        return sum(state == SUCCESS for state in self._states())

    def successful(self) -> bool:
        return all(state == SUCCESS for state in self._states())

    @overload
    def get(self, timeout: float | None = None, propagate: Literal[True] = ...) -> list[R]: ...
    @overload
    def get(self, timeout: float | None = None, *, propagate: bool) -> list[R | SoloistError]: ...
    def get(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Wait for every member; their values in order. A failed member raises its error
        (`TaskError`, `TaskRevoked`) unless `propagate` is False, when it stands in the
        list in the member's place: a partial failure is reported per member."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values: list[Any] = []
        for result in self.results:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                values.append(result.get(timeout=left))
            except ResultTimeout:
                raise ResultTimeout(
                    f"group member {result.id} did not finish within {timeout}s"
                ) from None
            except SoloistError as exc:
                if propagate:
                    raise
                values.append(exc)
        return values

    def revoke(self, terminate: bool = False, ttl: float | None = None) -> bool:
        """Revoke every member; True if any was still to finish."""
        revoked = [r.revoke(terminate, ttl) for r in self.results]
        return any(revoked)


class ChordResult(Result[R]):
    """The callback's result; `group` holds the members'."""

    def __init__(self, app: App, callback_id: str, group: GroupResult[Any]) -> None:
        super().__init__(app, callback_id)
        self.group = group

    def revoke(self, terminate: bool = False, ttl: float | None = None) -> bool:
        """Revoke the members and the callback (so it never runs)."""
        members = self.group.revoke(terminate, ttl)
        return super().revoke(terminate, ttl) or members
