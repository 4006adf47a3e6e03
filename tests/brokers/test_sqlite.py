"""What the SQLite broker promises beyond the contract suite: delayed rows kept out of the
claim's way, a database of another schema version refused with a clear error, and an idle
fetch that sleeps until a commit (inotify, or polling without it) and stops at an interrupt."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from soloist.brokers import sqlite_wait
from soloist.brokers.sqlite import SQLiteBroker
from soloist.errors import ConfigurationError
from soloist.results.memory import MemoryResultStore
from soloist.results.sqlite import SQLiteResultStore
from tests.support.interrupts import assert_interrupt_ends_a_wait
from tests.support.waiting import asleep, wait_until


def test_a_database_of_another_schema_version_is_refused_with_a_clear_error(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/soloist.db"
    SQLiteBroker(url).close()
    SQLiteBroker(url).close()  # opening it again is fine
    conn = sqlite3.connect(tmp_path / "soloist.db")
    conn.execute("UPDATE soloist_schema SET version = 99 WHERE part = 'broker'")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigurationError, match="schema version 99; this Soloist reads"):
        SQLiteBroker(url)


def test_delayed_rows_leave_the_hand_out_order_until_due_then_keep_their_place(
    tmp_path: Path,
) -> None:
    broker = SQLiteBroker(f"sqlite:///{tmp_path}/b.db")
    try:
        broker.publish_many([("q", b"far", 3600, 0)] * 50)
        first = broker.publish("q", b"soon", delay=0.3)
        broker.publish_many([("q", b"a", 0, 0), ("q", b"b", 0, 0)])
        conn = broker.db.connection()

        def delayed() -> int:
            sql = "SELECT delayed FROM soloist_messages WHERE id = ?"
            return int(conn.execute(sql, (int(first),)).fetchone()[0])

        assert delayed() == 1

        assert [d.body for d in broker.fetch(["q"], 10, 30, 0)] == [b"a", b"b"]
        time.sleep(0.35)
        # Due now: it joins the hand-out order at its id, ahead of anything published later.
        broker.publish("q", b"c")
        got = broker.fetch(["q"], 10, 30, 0)
        assert [d.body for d in got] == [b"soon", b"c"]
        assert got[0].id == first and delayed() == 0
        assert broker.stats("q").delayed == 50

        assert broker.retry(got[0], 3600)  # a retry's back-off is a delay too
        assert delayed() == 1
        assert broker.fetch(["q"], 10, 30, 0) == []
    finally:
        broker.close()


def test_records_are_stored_before_their_acks_and_with_them_where_acks_are_not_logged(
    tmp_path: Path,
) -> None:
    """Issue 20: with the ack log, the worker stores each record itself (one page
    committed) and the ack goes to the log; with `synchronous=full` (no log) the ack pipe
    stores a task's record in its ack's transaction, one sync for both."""
    logged = f"sqlite:///{tmp_path}/same.db"
    broker = SQLiteBroker(logged)
    pipe = broker.ack_pipe(SQLiteResultStore(logged))
    assert not pipe.records
    pipe.close()
    broker.close()
    url = f"sqlite:///{tmp_path}/full.db?synchronous=full"
    broker, results = SQLiteBroker(url), SQLiteResultStore(url)
    broker.publish_many([("q", b"x", 0, 0)] * 2)
    first, second = broker.fetch(["q"], 2, 30, 1.0)
    pipe = broker.ack_pipe(results)
    assert pipe.records
    pipe.send(first, ("t1", "SUCCESS", b"one"), 60)
    pipe.send(second, None, 60)
    pipe.send(first, ("t1b", "SUCCESS", b"again"), 60)  # acked already: lease lost
    assert pipe.pending == 3
    assert pipe.collect() == [True, True, False]
    assert results.get("t1") == ("SUCCESS", b"one")
    assert broker.depth("q") == 0 and broker.fetch(["q"], 2, 30, 0) == []
    elsewhere = broker.ack_pipe(SQLiteResultStore(f"sqlite:///{tmp_path}/other.db"))
    for pipe in (elsewhere, broker.ack_pipe(MemoryResultStore())):
        assert not pipe.records
        with pytest.raises(ValueError):
            pipe.send(first, ("t2", "SUCCESS", b""), 60)


def test_ack_many_tells_stale_from_acked_in_one_batch_by_receipt(tmp_path: Path) -> None:
    """A batch with a stale delivery deletes fewer rows than it holds: it is then undone
    and run again to tell which. The same message under an old lease and a new one is
    stale under the old receipt only."""
    broker = SQLiteBroker(f"sqlite:///{tmp_path}/b.db")
    try:
        broker.publish_many([("q", b"a", 0, 0), ("q", b"b", 0, 0)])
        old_a, old_b = broker.fetch(["q"], 2, 0, 0)  # leases that lapse at once
        (new_a,) = broker.fetch(["q"], 2, 30, 0)  # alone: its lease lapsed
        assert new_a.id == old_a.id
        assert broker.ack_many([old_a, old_b, new_a]) == [False, True, True]
        assert broker.stats("q").depth == 0 and broker.fetch(["q"], 2, 30, 0) == []
    finally:
        broker.close()


def test_an_acked_row_waits_done_for_the_next_claim_and_counts_for_nothing(
    tmp_path: Path,
) -> None:
    """An ack marks the row DONE (one page written, not two); the next claim deletes it.
    Leases of 0 s lapse at once: a DONE row is never handed out again all the same."""
    broker = SQLiteBroker(f"sqlite:///{tmp_path}/b.db")
    conn = broker.db.connection()

    def rows() -> int:
        return int(conn.execute("SELECT count(*) FROM soloist_messages").fetchone()[0])

    try:
        broker.publish_many([("q", b"a", 0, 0), ("q", b"b", 0, 0), ("q", b"c", 0, 0)])
        a, b = broker.fetch(["q"], 2, 0, 0)
        assert broker.ack(a) and not broker.ack(a)
        assert not broker.retry(a, 0) and broker.extend([a], 30) == [a]
        assert rows() == 3
        stats = broker.stats("q")
        assert (stats.depth, stats.delayed, stats.in_flight) == (2, 0, 0)  # b lapsed, c
        got = broker.fetch(["q"], 2, 30, 0)
        assert [d.id for d in got] == [b.id]  # alone: its lease lapsed
        assert rows() == 2
        assert broker.ack(got[0])
        assert broker.purge("q") == 1  # c; the DONE row goes too, uncounted
        assert rows() == 0
    finally:
        broker.close()


def _log_acks(url: str, acks: int, line: Connection | None) -> None:
    """In a worker process: lease every message for 0 s (they lapse at once), send the
    first `acks` down the ack pipe (to the ack log), then die, or, given a `line`, say so
    and wait to be told to collect the answers, and send them back."""
    broker = SQLiteBroker(url)
    got = broker.fetch(["q"], 10, 0, 0)
    pipe = broker.ack_pipe(None)
    for delivery in got[:acks]:
        pipe.send(delivery, None, 60)
    if line is None:
        os.kill(os.getpid(), signal.SIGKILL)
        return
    line.send([d.id for d in got])
    line.recv()
    line.send(pipe.collect())
    pipe.close()
    broker.close()


def test_acks_in_a_dead_workers_log_are_committed_by_the_claim_that_meets_its_leases(
    tmp_path: Path,
) -> None:
    """Each ack goes to the worker's ack log (no commit per task); a worker killed before
    committing them lost none: the next claim that finds its leases lapsed applies the
    log first, and hands out only what was not acked."""
    url = f"sqlite:///{tmp_path}/b.db"
    broker = SQLiteBroker(url)
    try:
        broker.publish_many([("q", body, 0, 0) for body in (b"a", b"b", b"c")])
        child = multiprocessing.get_context("fork").Process(target=_log_acks, args=(url, 2, None))
        child.start()
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
        assert broker.stats("q").depth == 3  # lapsed leases, acks in the log only
        assert len(os.listdir(tmp_path / "b.db-acks")) == 1
        got = broker.fetch(["q"], 3, 30, 0)
        assert [d.body for d in got] == [b"c"]
        assert broker.stats("q").depth == 0
        assert os.listdir(tmp_path / "b.db-acks") == []
    finally:
        broker.close()


def test_a_live_workers_ack_log_is_left_to_it(tmp_path: Path) -> None:
    """Another worker claiming a lapsed lease does not apply a live worker's log; that
    worker's ack then finds the message taken, and says so (stale)."""
    url = f"sqlite:///{tmp_path}/b.db"
    broker = SQLiteBroker(url)
    here, there = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(target=_log_acks, args=(url, 2, there))
    try:
        broker.publish_many([("q", b"a", 0, 0), ("q", b"b", 0, 0)])
        child.start()
        first, _ = here.recv()
        assert [d.id for d in broker.fetch(["q"], 2, 30, 0)] == [first]  # alone: lapsed
        here.send("collect")
        assert here.recv() == [False, True]
        child.join(10)
        assert child.exitcode == 0
        assert broker.stats("q").in_flight == 1  # the one taken here
        assert os.listdir(tmp_path / "b.db-acks") == []
    finally:
        if child.is_alive():
            child.kill()
        broker.close()


def test_ack_logs_take_the_database_files_permissions(tmp_path: Path) -> None:
    """As SQLite's -wal and -shm, whatever the umask: a worker of another user who may
    write the database must be able to add its log and apply a dead worker's."""
    url = f"sqlite:///{tmp_path}/b.db"
    broker = SQLiteBroker(url)
    os.chmod(tmp_path / "b.db", 0o666)
    umask = os.umask(0o077)
    try:
        pipe = broker.ack_pipe(None)
    finally:
        os.umask(umask)
    try:
        (log,) = (tmp_path / "b.db-acks").iterdir()
        assert (tmp_path / "b.db-acks").stat().st_mode & 0o777 == 0o777
        assert log.stat().st_mode & 0o777 == 0o666
    finally:
        pipe.close()
        broker.close()


def test_with_synchronous_full_each_ack_is_committed_as_it_is_sent(tmp_path: Path) -> None:
    """An ack log survives what a synchronous=normal commit survives, not a power loss:
    with synchronous=full each ack is its own transaction again, and no log is made."""
    broker = SQLiteBroker(f"sqlite:///{tmp_path}/b.db?synchronous=full")
    try:
        broker.publish("q", b"a")
        (delivery,) = broker.fetch(["q"], 1, 30, 0)
        pipe = broker.ack_pipe(None)
        pipe.send(delivery, None, 60)
        assert broker.stats("q").in_flight == 0  # committed already
        assert pipe.collect() == [True]
        assert not (tmp_path / "b.db-acks").exists()
        pipe.close()
    finally:
        broker.close()


@pytest.fixture(params=["inotify", "polling"])
def waiting(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How an idle fetch waits for a commit: inotify (Linux), or polling where there is
    none (macOS): both must wake for a publish and stop at an interrupt."""
    if request.param == "polling":
        monkeypatch.setattr(sqlite_wait, "inotify_simple", None)
    return str(request.param)


def test_an_idle_fetch_sleeps_through_other_writes_and_wakes_for_a_publish(
    tmp_path: Path, waiting: str
) -> None:
    """Heartbeats commit to the file too: they wake the wait, which finds nothing due and
    sleeps again; the publish ends it long before its 10 s timeout."""
    url = f"sqlite:///{tmp_path}/b.db"
    consumer, producer = SQLiteBroker(url), SQLiteBroker(url)
    timers = [threading.Timer(0.1 * i, producer.heartbeat, (f"w{i}", b"{}", 60)) for i in (1, 2)]
    timers.append(threading.Timer(0.5, producer.publish, ("q", b"wake")))
    t0 = time.monotonic()
    for timer in timers:
        timer.start()
    got = consumer.fetch(["q"], 1, 30, 10.0)
    assert [d.body for d in got] == [b"wake"]
    assert 0.5 <= time.monotonic() - t0 < 3.0
    assert (consumer._commits._watch is not None) == (waiting == "inotify")
    assert consumer.ack(got[0])
    assert sorted(producer.workers()) == ["w1", "w2"]


def test_interrupt_ends_an_idle_fetch_at_once(tmp_path: Path, waiting: str) -> None:
    """A warm shutdown's `interrupt` ends the wait under way, or the next one if none is:
    so a worker fetches with a long timeout and still stops at once."""
    assert_interrupt_ends_a_wait(
        SQLiteBroker(f"sqlite:///{tmp_path}/b.db"),
        "q",
        lambda thread: asleep(os.getpid(), thread.native_id),
    )


def _fetch_in_child(url: str, out: multiprocessing.SimpleQueue[bytes]) -> None:
    broker = _inherited
    assert broker is not None and broker.url == url
    got = broker.fetch(["q"], 1, 30, 10.0)
    out.put(got[0].body if got else b"")


_inherited: SQLiteBroker | None = None


def test_a_forked_child_waits_on_a_watch_of_its_own(tmp_path: Path) -> None:
    """The parent's watch (and interrupt pipe) stay the parent's: a broker inherited
    across a fork makes new ones in the child, which wakes for a publish."""
    global _inherited
    url = f"sqlite:///{tmp_path}/b.db"
    _inherited = SQLiteBroker(url)
    assert _inherited.fetch(["q"], 1, 30, 0.05) == []  # the parent's watch is made
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.SimpleQueue[bytes] = ctx.SimpleQueue()
    child = ctx.Process(target=_fetch_in_child, args=(url, out))
    child.start()
    try:
        wait_until(lambda: asleep(child.pid), 10, "the child waiting on its watch")
        SQLiteBroker(url).publish("q", b"to the child")
        child.join(10)
        assert child.exitcode == 0
        assert out.get() == b"to the child"
    finally:
        if child.is_alive():
            child.kill()
        _inherited = None
