"""The Redis result store beyond the contract suite: waiting without polling, every waiter
woken, keys that expire, and errors that never show the password."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from soloist import App
from soloist.errors import BrokerUnavailable
from soloist.results import redis_feed
from soloist.results.base import SUCCESS
from soloist.results.redis import RedisResultStore
from soloist.worker.revocation import Revocations
from tests.support.redis_support import (
    FlushingRedisResultStore,
    RedisServer,
    prefixed_url,
    refusing_port,
)
from tests.support.waiting import wait_until


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
    with refusing_port() as port:
        store = RedisResultStore(f"redis://:s3cret@127.0.0.1:{port}/0")
        with pytest.raises(BrokerUnavailable) as caught:
            store.get("t")
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


def test_workers_read_the_revocation_log_only_when_it_moved(store: RedisResultStore) -> None:
    """An idle worker's revocation sync calls Redis not at all (it reads its subscription
    to the revocation channel), beyond a GET of the log's mark every RECHECK seconds,
    until a revocation is logged; then the next sync reads it."""
    app = App("memory://", store.url)
    revocations = Revocations(app)
    revocations.sync()
    revocations.sync()  # the subscription's confirmation: one more read of the mark
    before = store.redis.client.info("commandstats")
    for _ in range(5):
        revocations.sync()
    after = store.redis.client.info("commandstats")
    assert {k: v["calls"] for k, v in after.items() if k != "cmdstat_info"} == {
        k: v["calls"] for k, v in before.items() if k != "cmdstat_info"
    }
    task_id = uuid.uuid4().hex
    store.revoke(task_id, b"", ttl=60)
    wait_until(lambda: revocations.sync() or task_id in revocations, 5, "the revocation")
    app.close()


def test_a_lost_revocation_feed_is_read_again(
    store: RedisResultStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subscription's connection killed: the next sync subscribes again and reads the
    mark, so a revocation logged meanwhile is seen; and the mark is read every RECHECK
    seconds anyway, in case a subscription dies without a word."""
    monkeypatch.setattr(redis_feed, "RECHECK", 0.3)
    app = App("memory://", store.url)
    revocations = Revocations(app)
    revocations.sync()
    admin = redis.Redis.from_url(store.url.split("?")[0])
    admin.client_kill_filter(_type="pubsub")
    missed = uuid.uuid4().hex
    store.revoke(missed, b"", ttl=60)
    wait_until(lambda: revocations.sync() or missed in revocations, 5, "the revocation")
    # A subscription that hears nothing (a silent network): the recheck still reads it.
    monkeypatch.setattr(store._feed, "_drain", lambda: False)
    quiet = uuid.uuid4().hex
    store.revoke(quiet, b"", ttl=60)
    revocations.sync()
    wait_until(lambda: revocations.sync() or quiet in revocations, 5, "the recheck")
    admin.close()
    app.close()
