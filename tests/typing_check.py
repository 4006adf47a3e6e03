"""Checked by mypy (see pyproject.toml), never run: the typed API as users see it."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

from soloist import (
    App,
    AsyncTask,
    Chain,
    ChainResult,
    ChordResult,
    GroupResult,
    Result,
    Signature,
    Task,
    chain,
    chord,
    group,
)

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
assert_type(add.apply_async((1, 2), expires=30, task_id="once"), Result[int])
assert_type(app.send_task("myproj.tasks.add", (1, 2), queue="q"), Result[Any])


@app.task(track_started=True)
def tracked(x: int) -> int:
    return x
assert_type(bound.delay(3).get(), float)
coroutine_task: AsyncTask[[str], bytes] = fetch
assert_type(fetch.delay("u").get(), bytes)
add.apply_async((1, 2), countdown=5, queue="other", priority=3)

# Workflows. `si()` checks its arguments against the task's; `s()` cannot (a partial call:
# the step before supplies the first arguments at run time), but keeps the return type,
# which `|`, `chain()` (up to five steps), `group()` and `chord()` carry to `get()`.
assert_type(add.s(1), Signature[int])
assert_type(add.si(1, 2), Signature[int])
assert_type(add.s(1).set(queue="q", countdown=1).delay(2).get(), int)
assert_type((add.s(1, 2) | greet.s()).delay().get(), str)
assert_type((add.si(1, 2) | add.s(3) | bound.s()).apply_async().get(), float)
assert_type(chain(add.s(1, 2), greet.s()).delay(), ChainResult[str])
assert_type(group(add.s(i, i) for i in range(3)).delay().get(), list[int])
assert_type(group(add.s(1, 1), add.s(2, 2)).delay(), GroupResult[int])
assert_type(chord([add.s(1, 1)], greet.s()).delay().get(), str)
assert_type((group([add.s(1, 1)]) | bound.s()).delay(), ChordResult[float])
assert_type(add.map([1, 2]).get(), list[int])
assert_type(add.starmap([(1, 2)]).get(timeout=1), list[int])
assert_type(add.chunks([(1, 2)], 10).get(), list[list[int]])
add.apply_async((1, 2), link=greet.s(), link_error=greet.s())
assert_type((add.si(1, 2) | group(add.s(1), add.s(2)) | bound.s()).delay(), ChainResult[float])
assert_type(group(add.s(1) | greet.s(), greet.s("x")).delay().get(), list[str])
assert_type(chord([add.s(1) | add.s(2)], greet.s()) | bound.s(), Chain[float])

# Django: tasks of soloist.contrib.django's app have typed delay_on_commit.
from soloist.contrib.django import DjangoApp, DjangoAsyncTask, DjangoTask  # noqa: E402

django_app = DjangoApp("memory://", "memory://")


@django_app.task
def mail(to: str, urgent: bool = False) -> None: ...


@django_app.task(queue="mail")
async def amail(to: str) -> int:
    return 1


mail_task: DjangoTask[..., None] = mail
amail_task: DjangoAsyncTask[..., int] = amail
assert_type(mail.delay_on_commit("a@b.c", urgent=True), None)
mail.delay_on_commit(1)  # type: ignore[arg-type]
