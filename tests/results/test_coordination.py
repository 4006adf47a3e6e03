"""The result stores' coordination primitives (claims, rate tokens, leased slots), held
against every store: what periodic tasks and cluster-wide limits rely on."""

from __future__ import annotations

import threading
import time
import uuid

from soloist.results.base import ResultStore
from tests.support.waiting import wait_until


def key() -> str:
    return uuid.uuid4().hex


def test_one_claim_wins_and_sees_the_value_in_place(store: ResultStore) -> None:
    k = key()
    assert store.peek(k) is None
    assert store.claim(k, "a", ttl=60) is None
    assert store.claim(k, "b", ttl=60) == "a"
    assert store.peek(k) == "a"


def test_a_claim_lapses_with_its_ttl(store: ResultStore) -> None:
    k = key()
    assert store.claim(k, "a", ttl=0.2) is None
    deadline = time.monotonic() + 5
    while store.peek(k) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert store.claim(k, "b", ttl=60) is None
    assert store.peek(k) == "b"


def test_concurrent_claims_have_one_winner(store: ResultStore) -> None:
    k = key()
    winners: list[str] = []

    def claim(name: str) -> None:
        if store.claim(k, name, ttl=60) is None:
            winners.append(name)

    threads = [threading.Thread(target=claim, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert store.peek(k) == winners[0]


def test_swap_only_from_the_expected_value(store: ResultStore) -> None:
    k = key()
    assert not store.swap(k, "a", "b", ttl=60)  # absent
    store.claim(k, "a", ttl=60)
    assert not store.swap(k, "x", "b", ttl=60)
    assert store.peek(k) == "a"
    assert store.swap(k, "a", "b", ttl=60)
    assert store.peek(k) == "b"
    assert store.swap(k, "b", None, ttl=60)
    assert store.peek(k) is None


def test_set_value_overwrites(store: ResultStore) -> None:
    k = key()
    store.claim(k, "a", ttl=60)
    store.set_value(k, "b", ttl=60)
    assert store.peek(k) == "b"


def test_tokens_never_exceed_the_limit_in_a_window(store: ResultStore) -> None:
    k = key()
    assert [store.take_token(k, 3, per=60) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = store.take_token(k, 3, per=60)
    assert 0 < wait <= 60
    assert store.take_token(key(), 3, per=60) == 0.0  # another key has its own window


def test_a_token_frees_when_it_leaves_the_window(store: ResultStore) -> None:
    k = key()
    assert store.take_token(k, 1, per=0.3) == 0.0
    wait = store.take_token(k, 1, per=0.3)
    assert 0 < wait <= 0.3
    time.sleep(wait + 0.05)
    assert store.take_token(k, 1, per=0.3) == 0.0


def test_slots_hold_at_most_the_limit(store: ResultStore) -> None:
    k = key()
    assert store.acquire_slot(k, "a", 2, ttl=60)
    assert store.acquire_slot(k, "b", 2, ttl=60)
    assert not store.acquire_slot(k, "c", 2, ttl=60)
    assert store.acquire_slot(k, "a", 2, ttl=60)  # a holder keeps its slot
    store.release_slot(k, "a")
    assert store.acquire_slot(k, "c", 2, ttl=60)
    assert not store.acquire_slot(k, "a", 2, ttl=60)


def test_an_unrenewed_slot_lapses_and_a_renewed_one_holds(store: ResultStore) -> None:
    k = key()
    assert store.acquire_slot(k, "dead", 2, ttl=0.5)
    # Renewed for 2 s at a time, often: a stall of a loaded machine does not lapse it.
    assert store.acquire_slot(k, "alive", 2, ttl=2)
    first_ttl_ends = time.monotonic() + 2
    assert not store.acquire_slot(k, "new", 2, ttl=60)
    deadline = time.monotonic() + 5
    while not store.acquire_slot(k, "new", 2, ttl=60):
        store.renew_slots([(k, "alive")], ttl=2)
        assert time.monotonic() < deadline
        time.sleep(0.05)

    def renewed_past_its_first_ttl() -> bool:
        store.renew_slots([(k, "alive")], ttl=2)
        return time.monotonic() > first_ttl_ends + 0.5

    wait_until(renewed_past_its_first_ttl, 10, "renewals past the first ttl")
    store.renew_slots([(k, "alive")], ttl=60)
    assert not store.acquire_slot(k, "other", 2, ttl=60)  # "alive" still holds the other
    store.renew_slots([(k, "never-held")], ttl=60)  # renews nothing, raises nothing
    assert not store.acquire_slot(k, "other", 2, ttl=60)
