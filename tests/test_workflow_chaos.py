"""A small workflow chaos run per broker: chords and chains while workers are SIGKILLed
(benchmarks/workflow_chaos.py runs the large one on demand)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.benchmarks import load_benchmark
from tests.support.servers import require


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis", "amqp"])
def test_every_chord_and_chain_ends_once_while_workers_are_killed(
    kind: str, tmp_path: Path
) -> None:
    if kind != "sqlite":  # the run starts a Redis of its own (for results, with RabbitMQ)
        require("Redis", "127.0.0.1", 6379)
    if kind == "amqp":
        require("RabbitMQ", "127.0.0.1", 5672)
    chaos = load_benchmark("workflow_chaos")
    # Within pytest's timeout, so that what did not finish is reported; the ledger and
    # the workers' log of a failed run are kept in tmp_path.
    report = chaos.run(
        kind, chords=30, chains=30, nested=10, kill_every=0.5, timeout=90, keep=tmp_path
    )
    assert report.kills >= 3, report
    assert report.hung == 0, report.notes
    assert report.wrong == 0, report.notes
    assert report.callback_twice == 0, report.notes
    assert report.after_ack == 0, report.notes
    assert report.unexplained == 0, report.notes
