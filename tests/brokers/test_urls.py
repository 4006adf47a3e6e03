"""Broker URL options are read in one place (brokers.base.url_options): a bad value, an
option given twice or one nobody reads is a ConfigurationError naming it, on every broker,
before anything connects."""

from __future__ import annotations

from pathlib import Path

import pytest

from soloist.brokers import from_url
from soloist.errors import ConfigurationError

BAD = {
    "memory": ["memory://?max_deliveries=x", "memory://?colour=blue"],
    "sqlite": [
        "sqlite:///{tmp}/a.db?max_deliveries=0",
        "sqlite:///{tmp}/a.db?synchronous=sometimes",
        "sqlite:///{tmp}/a.db?busy_timeout=-1",
        "sqlite:///{tmp}/a.db?busy_timeout=1&busy_timeout=2",
        "sqlite:///{tmp}/a.db?colour=blue",
    ],
    "redis": [
        "redis://127.0.0.1:6379/15?max_deliveries=x",
        "redis://127.0.0.1:6379/15?reconnect_timeout=soon",
        "redis://127.0.0.1:6379/15?colour=blue",
        "redis://127.0.0.1:6379/15?socket_timeout=x",
    ],
    "amqp": [
        "amqp://guest:guest@127.0.0.1:5672/?max_priority=300",
        "amqp://guest:guest@127.0.0.1:5672/?publish_timeout=x",
        "amqp://guest:guest@127.0.0.1:5672/?colour=blue",
        "amqp://guest:guest@127.0.0.1:5672/?heartbeat=x",
    ],
}
GOOD = {
    "memory": "memory://?max_deliveries=3",
    "sqlite": "sqlite:///{tmp}/a.db?max_deliveries=3&synchronous=full&busy_timeout=0.5",
    "redis": "redis://127.0.0.1:6379/15?max_deliveries=3&prefix=p:&socket_timeout=2",
    "amqp": "amqp://guest:guest@127.0.0.1:5672/?max_deliveries=3&max_priority=2&heartbeat=5",
}


@pytest.mark.parametrize("url", [u for urls in BAD.values() for u in urls])
def test_a_bad_option_is_a_configuration_error(url: str, tmp_path: Path) -> None:
    option = url.rsplit("?", 1)[1].split("=")[0]
    with pytest.raises(ConfigurationError, match=option):
        from_url(url.format(tmp=tmp_path))


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_good_options_are_read(kind: str, tmp_path: Path) -> None:
    broker = from_url(GOOD[kind].format(tmp=tmp_path))
    try:
        assert broker.max_deliveries == 3  # type: ignore[attr-defined]
    finally:
        broker.close()
