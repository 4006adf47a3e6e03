"""Defaults a new user meets first: where results go when no result URL is given."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from soloist import App, ConfigurationError
from tests.support.amqp_support import DeletingAMQPBroker, amqp_url
from tests.support.servers import require


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SOLOIST_BROKER_URL", raising=False)
    monkeypatch.delenv("SOLOIST_RESULT_URL", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    "broker",
    ["redis://:secret@127.0.0.1:6379/15?prefix=t:", "sqlite:////tmp/x.db", "memory://"],
)
def test_results_follow_the_broker(broker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert App(broker).result_url == broker
    monkeypatch.setenv("SOLOIST_BROKER_URL", broker)
    assert App().result_url == broker


def test_a_result_url_still_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLOIST_RESULT_URL", "memory://")
    assert App("redis://127.0.0.1:6379/15").result_url == "memory://"
    assert App("redis://127.0.0.1:6379/15", "sqlite:///r.db").result_url == "sqlite:///r.db"


def test_rabbitmq_without_a_result_url_says_so_at_get(tmp_path: Path) -> None:
    app = App("amqp://guest:hunter2@127.0.0.1:5672/", eager=False)
    assert app.result_url is None
    with pytest.raises(ConfigurationError, match="no result store") as caught:
        app.result("some-id").get(timeout=5)
    assert "hunter2" not in str(caught.value) and "SOLOIST_RESULT_URL" in str(caught.value)
    assert not list(tmp_path.iterdir()), "no stray soloist.db"


def test_the_default_broker_keeps_its_results_beside_it(tmp_path: Path) -> None:
    app = App()
    assert app.result_url == app.broker_url == "sqlite:///soloist.db"
    app.close()


def test_rabbitmq_app_sends_without_a_result_store() -> None:
    require("RabbitMQ", "127.0.0.1", 5672)
    broker = DeletingAMQPBroker(amqp_url(queue_expires=60))
    app = App(broker)
    queue = f"defaults-{uuid.uuid4().hex[:8]}"
    task = app.task(name="t", queue=queue)(lambda: None)
    try:
        result = task.delay()
        assert broker.depth(queue) == 1
        with pytest.raises(ConfigurationError, match="no result store"):
            result.get(timeout=1)
    finally:
        broker.close()
