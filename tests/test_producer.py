"""The producer side: arguments checked where they are sent, idempotent publish for an
explicit task id, and sending by name."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from soloist import App
from soloist.errors import BrokerUnavailable
from soloist.results import PENDING
from soloist.testing import drain


@pytest.fixture
def app() -> Iterator[App]:
    app = App("memory://", "memory://")
    yield app
    app.close()


def tasks(app: App) -> dict[str, Any]:
    @app.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="scaled", bind=True)
    def scaled(self: Any, a: int, *, factor: int = 1) -> int:
        return a * factor

    return {"add": add, "scaled": scaled}


@pytest.mark.parametrize(
    ("name", "args", "kwargs", "says"),
    [
        ("add", (1, 2, 3), {}, "too many positional arguments"),
        ("add", (1,), {}, "missing a required argument: 'b'"),
        ("add", (1, 2), {"c": 3}, "unexpected keyword argument 'c'"),
        ("scaled", (1, 2), {}, "too many positional arguments"),
        ("scaled", (1,), {"factr": 2}, "unexpected keyword argument 'factr'"),
    ],
)
def test_arguments_that_do_not_fit_raise_before_anything_is_sent(
    app: App, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], says: str
) -> None:
    task = tasks(app)[name]
    with pytest.raises(TypeError, match=f"arguments do not fit {name}.*{says}"):
        task.apply_async(args, kwargs)
    assert app.broker.depth("default") == 0


def test_arguments_that_fit_are_sent(app: App) -> None:
    t = tasks(app)
    t["add"].delay(1, 2)
    t["add"].apply_async((), {"a": 1, "b": 2})
    t["scaled"].apply_async((2,), {"factor": 3})
    assert app.broker.depth("default") == 3


def test_an_unencodable_argument_is_named_with_its_type(app: App) -> None:
    add = tasks(app)["add"]
    with pytest.raises(TypeError, match="argument 1 of add is a datetime, which json cannot"):
        add.delay(1, dt.datetime.now())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keyword argument 'b' of add is a set"):
        add.apply_async((1,), {"b": {2}})
    assert app.broker.depth("default") == 0


def test_an_explicit_task_id_is_published_once(app: App) -> None:
    add = tasks(app)["add"]
    first = add.apply_async((1, 2), task_id="order-42")
    again = add.apply_async((1, 2), task_id="order-42")  # a producer retrying after a timeout
    assert first.id == again.id == "order-42"
    assert app.broker.depth("default") == 1 and first.state == PENDING
    drain(app)
    assert again.get(timeout=1) == 3
    add.apply_async((1, 2), task_id="order-42")  # its result is still kept: not sent again
    assert app.broker.depth("default") == 0
    first.forget()
    add.apply_async((5, 5), task_id="order-42")  # forgotten: a new call
    drain(app)
    assert first.get(timeout=1) == 10


def test_a_failed_publish_leaves_the_id_free(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    add = tasks(app)["add"]

    def down(*args: Any, **kwargs: Any) -> str:
        raise BrokerUnavailable("down")

    with monkeypatch.context() as patch:
        patch.setattr(app.broker, "publish", down)
        with pytest.raises(BrokerUnavailable):
            add.apply_async((1, 2), task_id="t1")
    add.apply_async((1, 2), task_id="t1")
    assert app.broker.depth("default") == 1


def test_send_task_by_name_from_a_process_without_the_code(app: App) -> None:
    result = app.send_task("myproj.tasks.add", (1, 2), queue="mail", countdown=0)
    assert app.broker.depth("mail") == 1
    assert app.send_task("myproj.tasks.add", [1], task_id=result.id).id == result.id
    assert app.broker.depth("mail") == 1
    worker_app = App(app.broker, app.results)  # the worker's side: the code is there
    worker_app.task(name="myproj.tasks.add")(lambda a, b: a + b)
    drain(worker_app, ["mail"])
    assert result.get(timeout=1) == 3


def test_send_task_of_a_known_task_checks_its_arguments(app: App) -> None:
    tasks(app)
    with pytest.raises(TypeError, match="arguments do not fit add"):
        app.send_task("add", (1, 2, 3))
    assert app.send_task("add", (1, 2)).id
    assert app.broker.depth("default") == 1
