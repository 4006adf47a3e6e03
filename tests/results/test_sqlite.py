"""What the SQLite result store promises beyond the contract suite: with no index on
expiry, the records that expired are deleted by a sweep that steps through the table as
records are stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from soloist.results import sqlite as sqlite_results
from soloist.results.base import SUCCESS
from soloist.results.sqlite import SQLiteResultStore
from tests.support.waiting import wait_until


def test_storing_records_sweeps_the_expired_ones_a_window_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_results, "_SWEEP_ROWS", 3)
    monkeypatch.setattr(sqlite_results, "_STEP_PUTS", 2)
    store = SQLiteResultStore(f"sqlite:///{tmp_path}/results.db")
    conn = store.db.connection()

    def rows() -> set[str]:
        return {r[0] for r in conn.execute("SELECT task_id FROM soloist_results")}

    try:
        store.put_many([(f"old-{i}", SUCCESS, b"x") for i in range(10)], ttl=0.05)
        store.put_many([(f"keep-{i}", SUCCESS, b"y") for i in range(5)], ttl=600)
        wait_until(lambda: store.get("old-9") is None, what="the short records to expire")
        assert len(rows()) == 15, "expired, not yet swept"
        steps = 0
        while any(t.startswith("old-") for t in rows()):
            store.put(f"a-new-{steps}", SUCCESS, b"z", ttl=600)
            steps += 1
            assert steps < 40, "each step sweeps the next window of the table, in key order"
        assert rows() == {f"keep-{i}" for i in range(5)} | {f"a-new-{i}" for i in range(steps)}
        assert store.get("keep-0") == (SUCCESS, b"y")
    finally:
        store.close()
