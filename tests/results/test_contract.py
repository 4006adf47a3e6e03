"""The result store contract (soloist/results/base.py), held against every store."""

from __future__ import annotations

import threading
import time
import uuid

from soloist.results.base import FAILURE, RETRY, SUCCESS, ResultStore


def tid() -> str:
    return uuid.uuid4().hex


def test_put_get_forget(store: ResultStore) -> None:
    t = tid()
    assert store.get(t) is None
    assert store.put(t, SUCCESS, b"42", ttl=60)
    assert store.get(t) == (SUCCESS, b"42")
    store.forget(t)
    assert store.get(t) is None


def test_a_final_state_never_flips(store: ResultStore) -> None:
    t = tid()
    assert store.put(t, RETRY, b"r", ttl=60)
    assert store.put(t, SUCCESS, b"first", ttl=60)
    assert not store.put(t, FAILURE, b"stale", ttl=60)
    assert store.get(t) == (SUCCESS, b"first")


def test_results_expire(store: ResultStore) -> None:
    t, keep = tid(), tid()
    store.put(t, SUCCESS, b"x", ttl=0.2)
    store.put(keep, SUCCESS, b"y", ttl=60)
    time.sleep(0.4)
    assert store.get(t) is None
    store.expire()
    assert store.get(keep) == (SUCCESS, b"y")


def test_wait_returns_when_the_result_lands(store: ResultStore) -> None:
    t = tid()
    threading.Timer(0.2, store.put, (t, SUCCESS, b"done", 60)).start()
    t0 = time.monotonic()
    assert store.wait(t, timeout=5) == (SUCCESS, b"done")
    assert time.monotonic() - t0 < 2


def test_wait_times_out(store: ResultStore) -> None:
    t = tid()
    t0 = time.monotonic()
    assert store.wait(t, timeout=0.3) is None
    assert 0.25 <= time.monotonic() - t0 < 2
