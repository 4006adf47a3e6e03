"""Size and depth limits: clear errors for producers, dead letters or failures on workers."""

from __future__ import annotations

from typing import Any

import pytest

from soloist import App, LimitExceeded, TaskError
from soloist.testing import drain


def nest(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def test_argument_depth_limit(app: App) -> None:
    @app.task(name="echo")
    def echo(x: Any) -> Any:
        return x

    echo.delay(nest(30))
    with pytest.raises(LimitExceeded, match="nest deeper than the limit of 32"):
        echo.delay(nest(40))
    looped: list[Any] = [1]
    looped.append({"again": looped})
    with pytest.raises(LimitExceeded, match="contain themselves"):  # not a hang
        echo.delay(looped)
    app.broker.publish(
        "default", b'j{"v":1,"id":"d","task":"echo","args":[' + b"[" * 40 + b"]" * 40 + b"]}"
    )
    stats = drain(app)
    assert stats.done == 1
    (dead,) = app.broker.dead_letters("default")
    assert "deeper than the limit" in dead.reason


def test_result_limits_fail_the_task_not_the_worker() -> None:
    app = App("memory://", "memory://", max_result_size=1000)

    @app.task(name="big", max_retries=0)
    def big() -> str:
        return "x" * 2000

    @app.task(name="unserializable", max_retries=0)
    def unserializable() -> object:
        return {1, 2}

    big_result, odd_result = big.delay(), unserializable.delay()
    stats = drain(app)
    assert stats.failed == 2
    with pytest.raises(TaskError, match="over the limit of 1000"):
        big_result.get(timeout=1)
    with pytest.raises(TaskError, match="cannot be serialized"):
        odd_result.get(timeout=1)
