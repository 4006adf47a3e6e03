"""The task API: decorator options, sending, results, retries, eager mode."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from typing import Any

import pytest

from soloist import App, ConfigurationError, ResultTimeout, Retry, Task, TaskError
from soloist.testing import drain


def test_calling_a_task_runs_it_locally(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    assert app.broker.depth("default") == 0
    assert add.__name__ == "add" and add.name.endswith("add")


def test_delay_and_get(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    result = add.delay(2, 3)
    assert result.state == "PENDING" and not result.ready()
    drain(app)
    assert result.get(timeout=1) == 5
    assert result.state == "SUCCESS" and result.ready()
    assert app.result(result.id).get() == 5


def test_get_times_out(app: App) -> None:
    @app.task
    def noop() -> None: ...

    with pytest.raises(ResultTimeout):
        noop.delay().get(timeout=0.1)


def test_failure_carries_type_message_and_traceback(app: App) -> None:
    @app.task(max_retries=0)
    def boom(x: int) -> None:
        raise KeyError(f"missing {x}")

    result = boom.delay(7)
    drain(app)
    with pytest.raises(TaskError) as err:
        result.get(timeout=1)
    assert err.value.exc_type == "KeyError"
    assert err.value.message == "'missing 7'"
    assert "raise KeyError" in err.value.traceback
    assert result.state == "FAILURE"
    (dead,) = app.broker.dead_letters("default")
    assert dead.reason == "failed: KeyError: 'missing 7'"


def test_apply_async_options(app: App) -> None:
    seen: list[str] = []

    @app.task(queue="low")
    def record(tag: str) -> None:
        seen.append(tag)

    record.apply_async(("late",), countdown=0.5)
    record.apply_async(("eta",), eta=dt.datetime.now() + dt.timedelta(seconds=0.3))
    record.apply_async(("other-queue",), queue="high")
    record.apply_async(("urgent",), priority=9)
    record.apply_async(kwargs={"tag": "normal"})
    assert app.broker.depth("low") == 4 and app.broker.depth("high") == 1
    drain(app, ["high", "low"])
    assert seen == ["other-queue", "urgent", "normal", "eta", "late"]


def test_countdown_and_eta_together_are_refused(app: App) -> None:
    @app.task
    def noop() -> None: ...

    with pytest.raises(ConfigurationError):
        noop.apply_async(countdown=1, eta=time.time())


def test_bound_task_retries_with_self_retry(app: App) -> None:
    @app.task(bind=True, max_retries=3)
    def flaky(self: Task[[int], int], x: int) -> int:
        if self.request.retries < 2:
            self.retry(countdown=0.05)
        return x * 10 + self.request.retries

    result = flaky.delay(4)
    stats = drain(app)
    assert result.get(timeout=1) == 42
    assert stats.retried == 2


def test_raising_retry_and_giving_up(app: App) -> None:
    calls: list[int] = []

    @app.task(max_retries=2, retry_backoff=0.01)
    def always() -> None:
        calls.append(1)
        raise Retry(exc=OSError("still down"))

    result = always.delay()
    drain(app)
    assert len(calls) == 3
    with pytest.raises(TaskError) as err:
        result.get(timeout=1)
    assert err.value.exc_type == "OSError"
    (dead,) = app.broker.dead_letters("default")
    assert dead.reason == "failed after 2 retries: OSError: still down"


def test_autoretry_for_with_backoff(app: App) -> None:
    attempts: list[float] = []

    @app.task(
        autoretry_for=(ConnectionError,), max_retries=3, retry_backoff=0.1, retry_jitter=False
    )
    def fetch() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError("refused")
        return "ok"

    @app.task(autoretry_for=(ConnectionError,))
    def other() -> None:
        raise ValueError("not retried")

    ok, bad = fetch.delay(), other.delay()
    drain(app)
    assert ok.get(timeout=1) == "ok"
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # 0.1 * 2**n
    with pytest.raises(TaskError):
        bad.get(timeout=1)


def test_backoff_with_jitter_stays_under_the_ceiling(app: App) -> None:
    @app.task(retry_backoff=2, retry_backoff_max=10)
    def noop() -> None: ...

    draws = [noop.options.backoff(n) for n in range(6) for _ in range(50)]
    assert all(0 <= d <= 10 for d in draws)
    assert len(set(draws)) > 100  # jittered, not fixed


def test_ignore_result(app: App) -> None:
    @app.task(ignore_result=True)
    def fire() -> int:
        return 1

    result = fire.delay()
    drain(app)
    assert app.results.get(result.id) is None
    with pytest.raises(ConfigurationError):
        result.get()


def test_async_task_called_locally_returns_a_coroutine(app: App) -> None:
    import asyncio

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    assert asyncio.run(double(4)) == 8
    result = double.delay(5)
    drain(app)
    assert result.get(timeout=1) == 10


def test_task_names_must_be_unique(app: App) -> None:
    @app.task(name="same")
    def one() -> None: ...

    with pytest.raises(ConfigurationError):

        @app.task(name="same")
        def two() -> None: ...


def test_unknown_option_is_a_clear_error(app: App) -> None:
    with pytest.raises(ConfigurationError, match="bad option"):
        app.task(retries=3)(lambda: None)  # type: ignore[call-overload]


def test_eager_mode_runs_at_delay() -> None:
    app = App(eager=True)
    assert (app.broker_url, app.result_url) == ("eager://", "memory://")

    @app.task(bind=True, max_retries=2)
    def flaky(self: Any) -> int:
        if self.request.retries == 0:
            raise self.retry(countdown=60)  # eager retries run at once
        return self.request.retries

    @app.task(max_retries=0)
    def boom() -> None:
        raise RuntimeError("eager failure")

    assert flaky.delay().get(timeout=0) == 1
    with pytest.raises(TaskError, match="eager failure"):
        boom.delay().get(timeout=0)
    with pytest.raises(TypeError, match="arguments do not fit"):
        boom.delay(1)  # type: ignore[call-arg]


def test_message_too_large_is_refused_by_the_producer() -> None:
    from soloist import MessageTooLarge

    app = App("memory://", "memory://", max_message_size=100)

    @app.task
    def echo(s: str) -> str:
        return s

    with pytest.raises(MessageTooLarge):
        echo.delay("x" * 200)
    assert app.broker.depth("default") == 0


def test_env_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLOIST_BROKER_URL", "memory://")
    monkeypatch.setenv("SOLOIST_RESULT_URL", "sqlite:///x.db")
    app = App()
    assert (app.broker_url, app.result_url) == ("memory://", "sqlite:///x.db")
    monkeypatch.delenv("SOLOIST_BROKER_URL")
    monkeypatch.delenv("SOLOIST_RESULT_URL")
    assert App().broker_url == "sqlite:///soloist.db"


def test_unknown_broker_scheme(app: App) -> None:
    with pytest.raises(ConfigurationError, match="unknown broker URL scheme"):
        _ = App("kafka://x").broker
