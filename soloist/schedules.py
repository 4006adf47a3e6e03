"""Schedules: when a periodic task's ticks fall, by cron expression or fixed interval.

Tick times are a pure function of the schedule, so every worker running `--beat` computes
the same ones and can claim each by (schedule, tick time) in the result store (see
soloist.worker.beat). An interval's ticks fall on multiples of it since the Unix epoch;
a cron expression's are read by croniter (the `soloist[cron]` extra: `every=` schedules
and producers need none of it) in the schedule's time zone (zoneinfo).

Daylight saving time, as cron users expect: a wall-clock time skipped in spring (02:30 on
the night clocks jump from 02:00 to 03:00) runs once, at the jump (03:00); a time repeated
in autumn runs once, at its first occurrence, unless the hour field is a wildcard (`*`,
`*/2`): such a schedule runs on real time through the repeated hour, as Vixie cron does.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigurationError

#: Most ticks returned by one `ticks` call: a catch-up after a long outage runs the newest.
MAX_TICKS = 1000


@dataclass(frozen=True)
class Schedule:
    """When the task `name` runs, and with what."""

    name: str
    cron: str | None = None
    #: Seconds between ticks (with `cron` None).
    every: float | None = None
    tz: str = "UTC"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: After a time with no scheduler running: run every missed tick, not only the last.
    catch_up: bool = False

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ConfigurationError(f"schedule {self.name}: give cron= or every=, not both")
        if self.every is not None and not (math.isfinite(self.every) and self.every > 0):
            raise ConfigurationError(f"schedule {self.name}: every= must be over 0 seconds")
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigurationError(f"schedule {self.name}: unknown time zone {self.tz!r}") from (
                exc
            )
        if self.cron is not None and not _croniter().is_valid(self.cron):
            raise ConfigurationError(f"schedule {self.name}: bad cron expression {self.cron!r}")

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron!r} ({self.tz})"
        return f"every {self.every:g}s"

    def ticks(self, after: float, until: float, limit: int = MAX_TICKS) -> list[float]:
        """The tick times t with after < t <= until (Unix time), oldest first; the newest
        `limit` of them when there are more."""
        if self.every is not None:
            first = math.floor(after / self.every) + 1
            last = math.floor(until / self.every)
            return [n * self.every for n in range(max(first, last - limit + 1), last + 1)]
        kept: collections.deque[float] = collections.deque(maxlen=limit)
        for tick in self._cron_ticks(after):
            if tick > until:
                break
            kept.append(tick)
        return list(kept)

    def upcoming(self, after: float, count: int) -> list[float]:
        """The next `count` tick times after `after`."""
        if self.every is not None:
            first = math.floor(after / self.every) + 1
            return [(first + n) * self.every for n in range(count)]
        times = []
        for tick in self._cron_ticks(after):
            times.append(tick)
            if len(times) == count:
                break
        return times

    def period(self, at: float) -> float:
        """Seconds between the two ticks after `at` (the interval, for `every`)."""
        if self.every is not None:
            return self.every
        first, second = self.upcoming(at, 2)
        return second - first

    def _cron_ticks(self, after: float) -> Iterator[float]:
        assert self.cron is not None
        start = dt.datetime.fromtimestamp(after, ZoneInfo(self.tz))
        wildcard_hour = self.cron.split()[1].startswith("*")
        it = _croniter()(self.cron, start)
        while True:
            tick: dt.datetime = it.get_next(dt.datetime)
            if tick.fold and not wildcard_hour and _repeated(tick):
                continue  # the second pass through a wall-clock time in autumn
            yield tick.timestamp()


def _croniter() -> Any:
    # Imported here: an optional extra, and 20 ms that apps without cron schedules skip.
    try:
        from croniter import croniter
    except ImportError:
        raise ConfigurationError(
            "cron schedules need croniter: pip install 'soloist[cron]'"
        ) from None
    return croniter


def _repeated(tick: dt.datetime) -> bool:
    """Whether this wall-clock time also occurred earlier (an autumn fold's second pass)."""
    return tick.replace(fold=0).timestamp() != tick.timestamp()


def interval(every: float | dt.timedelta) -> float:
    """`every=` as seconds."""
    return every.total_seconds() if isinstance(every, dt.timedelta) else float(every)
