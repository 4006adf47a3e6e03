"""Batched sending (`task.map`, `starmap`, `app.send_many`) and the worker's batched settling."""

from __future__ import annotations

import pytest

from soloist import App
from soloist.testing import drain


def test_starmap_sends_one_call_per_item_and_every_result_comes_back(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    results = add.starmap([(i, i) for i in range(250)])
    assert app.broker.depth("default") == 250
    stats = drain(app)
    assert stats.done == 250
    assert [r.get(timeout=1) for r in results] == [2 * i for i in range(250)]
    assert app.broker.depth("default") == 0


def test_map_runs_at_once_in_eager_mode() -> None:
    app = App(eager=True)

    @app.task
    def double(x: int) -> int:
        return 2 * x

    assert [r.get(timeout=1) for r in double.map([1, 2])] == [2, 4]


def test_map_refuses_calls_that_cannot_be_encoded(app: App) -> None:
    @app.task
    def echo(x: object) -> object:
        return x

    with pytest.raises(TypeError):
        echo.map([1, object()])
    assert app.broker.depth("default") == 0  # nothing of the batch was published


@pytest.mark.parametrize("prefetch", [None, 1, 7])
def test_batched_acks_settle_every_outcome(app: App, prefetch: int | None) -> None:
    @app.task(max_retries=0)
    def maybe(x: int) -> int:
        if x % 5 == 0:
            raise ValueError(x)
        return x

    results = maybe.map(range(1, 41))
    stats = drain(app, prefetch=prefetch)
    assert (stats.done, stats.failed) == (32, 8)
    assert [r.state for r in results].count("SUCCESS") == 32
    assert app.broker.depth("default") == 0
    assert len(app.broker.dead_letters("default")) == 8
