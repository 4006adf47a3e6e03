"""Checked by mypy (see pyproject.toml), never run: the typed API as users see it."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

from soloist import App, AsyncTask, Result, Task

app = App("memory://", "memory://")


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task(queue="q", max_retries=2)
def greet(name: str, punctuation: str = "!") -> str:
    return name + punctuation


@app.task(bind=True)
def bound(self: Any, x: int) -> float:
    return x / 2


@app.task
async def fetch(url: str) -> bytes:
    return url.encode()


plain: Task[[int, int], int] = add
assert_type(add(1, 2), int)
assert_type(add.delay(1, 2), Result[int])
assert_type(add.delay(1, 2).get(timeout=1), int)
assert_type(greet.delay("x", punctuation="?").get(), str)
assert_type(bound.delay(3).get(), float)
coroutine_task: AsyncTask[[str], bytes] = fetch
assert_type(fetch.delay("u").get(), bytes)
add.apply_async((1, 2), countdown=5, queue="other", priority=3)
