"""Task limits declared at registration: unique sends, option checks, and the flag that
keeps tasks without limits off the store (workers check only `Task.limits`)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from soloist import App, LimitExceeded
from soloist.errors import ConfigurationError
from soloist.testing import drain


@pytest.fixture
def sqlite_app(sqlite_url: str) -> Iterator[App]:
    app = App(sqlite_url, sqlite_url)
    yield app
    app.close()


def test_a_second_send_while_the_first_waits_returns_the_first(sqlite_app: App) -> None:
    @sqlite_app.task(name="report", unique_for=60, unique_key=lambda user: str(user))
    def report(user: int) -> int:
        return user

    first = report.delay(1)
    assert report.delay(1).id == first.id
    other = report.delay(2)  # another key
    assert other.id != first.id
    assert sqlite_app.broker.depth("default") == 2
    drain(sqlite_app)
    assert first.get(timeout=5) == 1
    again = report.delay(1)  # the first one ended: a new send goes through
    assert again.id != first.id
    assert sqlite_app.broker.depth("default") == 1


def test_the_unique_window_ends(sqlite_app: App) -> None:
    @sqlite_app.task(name="ping", unique_for=0.3)
    def ping() -> None:
        pass

    first = ping.delay()
    assert ping.delay().id == first.id
    time.sleep(0.4)
    assert ping.delay().id != first.id
    assert [r.id for r in ping.starmap([(), ()])][1] != first.id


def test_a_failed_send_leaves_no_unique_claim(sqlite_app: App) -> None:
    @sqlite_app.task(name="big", unique_for=60)
    def big(blob: str) -> None:
        pass

    with pytest.raises(LimitExceeded):
        big.delay("x" * (sqlite_app.max_message_size + 1))
    big.delay("x")
    assert sqlite_app.broker.depth("default") == 1  # sent: nothing held the key


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"rate_limit": "10/x"}, "bad rate limit"),
        ({"rate_limit": "0/s"}, "bad rate limit"),
        ({"max_concurrency": 0}, "max_concurrency must be 1 or more"),
        ({"concurrency_key": str}, "concurrency_key needs max_concurrency"),
        ({"unique_for": 0}, "unique_for must be over 0"),
        ({"unique_key": str}, "unique_key needs unique_for"),
    ],
)
def test_bad_limits_are_refused_at_registration(
    app: App, options: dict[str, object], error: str
) -> None:
    with pytest.raises(ConfigurationError, match=error):
        app.task(**options)(lambda: None)  # type: ignore[call-overload]


def test_only_tasks_with_limits_carry_them(app: App) -> None:
    plain = app.task(name="plain")(lambda: None)
    limited = app.task(name="limited", rate_limit="5/m")(lambda: None)
    assert plain.limits is None
    assert limited.limits is not None and limited.limits.rate == (5, 60.0)


def test_eager_mode_waits_for_a_rate_limit() -> None:
    app = App(eager=True)
    runs: list[float] = []
    task = app.task(name="slow", rate_limit="2/s")(lambda: runs.append(time.monotonic()))
    for _ in range(3):
        task.delay()
    assert len(runs) == 3
    assert runs[2] - runs[0] >= 0.9  # the third waited for the first to leave the window
