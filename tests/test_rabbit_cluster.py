"""RabbitMQ across nodes (benchmarks/rabbit_cluster.py): a private 3-node cluster whose
queue leader's node is stopped mid-run loses nothing confirmed, and consumers on the
other nodes go on. Three nodes of its own; the shared RabbitMQ is not touched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.benchmarks import load_benchmark
from tests.support.rabbit_node_support import require_rabbitmq_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(300)  # three Erlang VMs boot and cluster first: minutes on a loaded machine
def test_a_stopped_node_loses_nothing() -> None:
    require_rabbitmq_server()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    report = load_benchmark("rabbit_cluster").run(tasks=300, timeout=180)
    assert report.restarts == 1 and report.lost == 0, report
    assert report.unexplained == 0, report.notes
