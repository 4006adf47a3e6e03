"""What the SQLite broker promises beyond the contract suite: delayed rows kept out of the
claim's way, and a database of another schema version refused with a clear error."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from soloist.brokers.sqlite import SQLiteBroker
from soloist.errors import ConfigurationError
from soloist.results.memory import MemoryResultStore
from soloist.results.sqlite import SQLiteResultStore


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


def test_a_result_store_in_the_same_file_commits_each_record_with_its_ack(
    tmp_path: Path,
) -> None:
    """Issue 20: the ack pipe stores a task's record in its ack's transaction."""
    url = f"sqlite:///{tmp_path}/same.db"
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
