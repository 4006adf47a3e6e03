"""The Redis result store beyond the contract suite: waiting without polling, every waiter
woken, keys that expire, and errors that never show the password."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from soloist import App
from soloist.errors import BrokerUnavailable
from soloist.results.base import SUCCESS
from soloist.results.redis import RedisResultStore
from soloist.worker.revocation import Revocations
from tests.support.redis_support import (
    FlushingRedisResultStore,
    RedisServer,
    free_port,
    prefixed_url,
)


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[RedisResultStore]:
    s = FlushingRedisResultStore(prefixed_url(f"t-{uuid.uuid4().hex[:8]}:", redis_server.url))
    yield s
    s.close()


def test_wait_blocks_instead_of_polling(store: RedisResultStore) -> None:
    task_id = uuid.uuid4().hex
    stats = store.redis.client.info("commandstats")
    before = stats.get("cmdstat_hmget", {}).get("calls", 0)
    assert store.wait(task_id, timeout=1.0) is None
    after = store.redis.client.info("commandstats")["cmdstat_hmget"]["calls"]
    assert after - before <= 3  # a look before and after the one blocking wait


def test_one_result_wakes_every_waiter(store: RedisResultStore) -> None:
    task_id = uuid.uuid4().hex
    got: list[tuple[str, bytes] | None] = []
    waiters = [
        threading.Thread(target=lambda: got.append(store.wait(task_id, 5))) for _ in range(3)
    ]
    for w in waiters:
        w.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    store.put(task_id, SUCCESS, b"42", ttl=60)
    for w in waiters:
        w.join()
    assert got == [(SUCCESS, b"42")] * 3
    assert time.monotonic() - t0 < 2.0


def test_the_wake_up_token_expires_with_the_result(store: RedisResultStore) -> None:
    task_id = uuid.uuid4().hex
    store.put(task_id, SUCCESS, b"x", ttl=0.2)
    time.sleep(0.4)
    assert store.redis.client.exists(f"{store.prefix}r:{task_id}:done") == 0
    assert store.wait(task_id, timeout=0.1) is None


def test_errors_never_show_the_password() -> None:
    store = RedisResultStore(f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    with pytest.raises(BrokerUnavailable) as caught:
        store.get("t")
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


def test_workers_read_the_revocation_log_only_when_it_moved(store: RedisResultStore) -> None:
    """An idle worker's revocation sync is one GET of the log's mark, not a script, until a
    revocation is logged; then the next sync reads it."""
    app = App("memory://", store.url)
    revocations = Revocations(app)
    revocations.sync()
    before = store.redis.client.info("commandstats")
    for _ in range(5):
        revocations.sync()
    after = store.redis.client.info("commandstats")
    scripts = after["cmdstat_evalsha"]["calls"] - before["cmdstat_evalsha"]["calls"]
    assert scripts == 0 and after["cmdstat_get"]["calls"] - before["cmdstat_get"]["calls"] >= 5
    task_id = uuid.uuid4().hex
    store.revoke(task_id, b"", ttl=60)
    revocations.sync()
    assert task_id in revocations
    app.close()
