"""The result store contract (soloist/results/base.py), held against every store."""

from __future__ import annotations

import threading
import time
import uuid

from soloist.results.base import FAILURE, PENDING, RETRY, REVOKED, SUCCESS, ResultStore
from tests.support.waiting import wait_until


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


def test_put_many_stores_each_and_never_flips_a_final_state(store: ResultStore) -> None:
    done, fresh = tid(), tid()
    store.put(done, SUCCESS, b"first", ttl=60)
    assert store.put_many([(done, FAILURE, b"stale"), (fresh, SUCCESS, b"new")], 60) == [
        False,
        True,
    ]
    assert store.get(done) == (SUCCESS, b"first")
    assert store.get(fresh) == (SUCCESS, b"new")
    assert store.put_many([], 60) == []


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


def test_revoke_is_final_and_logged(store: ResultStore) -> None:
    t, other = tid(), tid()
    t0 = time.time()
    assert store.revoke(t, b"r", ttl=60)
    assert store.get(t) == (REVOKED, b"r")
    assert not store.put(t, SUCCESS, b"late", ttl=60), "a finishing worker must not flip it"
    assert store.revoke(other, b"r", ttl=60, terminate=True)
    log = store.revoked_since(t0 - 60)
    assert [(r.task_id, r.terminate) for r in log] == [(t, False), (other, True)]
    assert store.revoked_since(log[1].at) == [log[1]]


def test_revoke_after_the_task_ended_changes_nothing(store: ResultStore) -> None:
    t = tid()
    store.put(t, SUCCESS, b"42", ttl=60)
    assert not store.revoke(t, b"r", ttl=60)
    assert store.get(t) == (SUCCESS, b"42")
    assert store.revoked_since(0) == []


def test_revoke_again_to_terminate(store: ResultStore) -> None:
    t = tid()
    assert store.revoke(t, b"r", ttl=60)
    assert store.revoke(t, b"r", ttl=60, terminate=True)
    assert [(r.task_id, r.terminate) for r in store.revoked_since(0)] == [(t, True)]


def test_revocations_expire(store: ResultStore) -> None:
    t, keep = tid(), tid()
    store.revoke(t, b"r", ttl=0.2)
    store.revoke(keep, b"r", ttl=60)
    time.sleep(0.4)
    store.expire()
    assert [r.task_id for r in store.revoked_since(0)] == [keep]


def test_forget_if_drops_only_the_record_seen(store: ResultStore) -> None:
    t = tid()
    store.put(t, FAILURE, b"first", ttl=60)
    seen = store.get(t)
    assert seen is not None
    assert not store.forget_if(t, (FAILURE, b"other"))
    assert store.forget_if(t, seen)
    assert store.get(t) is None
    store.put(t, SUCCESS, b"rerun", ttl=60)
    assert not store.forget_if(t, seen), "a newer result must survive a late forget"
    assert store.get(t) == (SUCCESS, b"rerun")


def test_chord_add_tells_the_completing_member_once(store: ResultStore) -> None:
    c = tid()
    assert store.chord_add(c, 2, 3, b"two", ttl=60) is None
    assert store.chord_add(c, 0, 3, b"zero", ttl=60) is None
    assert store.chord_add(c, 2, 3, b"two again", ttl=60) is None, "a redelivery counts once"
    assert store.chord_add(c, 1, 3, b"one", ttl=60) == [b"zero", b"one", b"two"]
    # The completing member, redelivered after a crash, is told again; nobody else is.
    assert store.chord_add(c, 1, 3, b"one again", ttl=60) == [b"zero", b"one", b"two"]
    assert store.chord_add(c, 0, 3, b"zero again", ttl=60) is None
    assert store.chord_add(tid(), 0, 1, b"alone", ttl=60) == [b"alone"]


def test_chord_add_many_adds_in_order_within_one_call(store: ResultStore) -> None:
    a, b = tid(), tid()
    items = [(a, 0, 2, b"a0"), (b, 0, 3, b"b0"), (a, 1, 2, b"a1"), (a, 1, 2, b"a1 again")]
    assert store.chord_add_many(items, ttl=60) == [None, None, [b"a0", b"a1"], [b"a0", b"a1"]]
    assert store.chord_add_many([], ttl=60) == []
    assert store.chord_add_many([(b, 2, 3, b"b2"), (b, 1, 3, b"b1")], ttl=60) == [
        None,
        [b"b0", b"b1", b"b2"],
    ]


def test_chord_add_is_atomic_across_threads(store: ResultStore) -> None:
    c, size = tid(), 40
    told: list[list[bytes]] = []

    def add(i: int) -> None:
        for _ in range(2):  # every member twice, as if each were redelivered
            got = store.chord_add(c, i, size, str(i).encode(), ttl=60)
            if got is not None:
                told.append(got)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert told and all(got == [str(i).encode() for i in range(size)] for got in told)
    assert len(told) == 2, "only the completing member is told (once more on its re-add)"


def test_chords_expire(store: ResultStore) -> None:
    c = tid()
    store.chord_add(c, 0, 2, b"old", ttl=0.2)
    time.sleep(0.4)
    store.expire()
    assert store.chord_add(c, 1, 2, b"one", ttl=60) is None, "the old member is gone"
    assert store.chord_add(c, 0, 2, b"zero", ttl=60) == [b"zero", b"one"]


def test_put_new_records_only_where_there_is_no_record(store: ResultStore) -> None:
    t, gone = tid(), tid()
    assert store.put_new(t, PENDING, b"sent", ttl=60)
    assert not store.put_new(t, PENDING, b"again", ttl=60)
    assert store.get(t) == (PENDING, b"sent")
    assert store.put(t, SUCCESS, b"42", ttl=60)  # a worker's record replaces the reservation
    assert not store.put_new(t, PENDING, b"again", ttl=60)
    assert store.get(t) == (SUCCESS, b"42")
    store.put(gone, SUCCESS, b"old", ttl=0.1)
    wait_until(lambda: store.get(gone) is None, 5, "the reservation to expire")
    assert store.put_new(gone, PENDING, b"sent", ttl=60)  # an expired record is none


def test_put_new_has_one_winner(store: ResultStore) -> None:
    t = tid()
    wins: list[bool] = []
    threads = [
        threading.Thread(target=lambda: wins.append(store.put_new(t, PENDING, b"x", ttl=60)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]
