"""A small chaos run per broker (benchmarks/chaos.py runs the large one on demand)."""

from __future__ import annotations

import pytest

from tests.support.benchmarks import load_benchmark
from tests.support.rabbit_node_support import require_rabbitmq_server
from tests.support.servers import require


@pytest.mark.parametrize("kind", ["sqlite", "redis", "amqp"])
def test_chaos_loses_nothing(kind: str) -> None:
    if kind == "redis":
        require("Redis", "127.0.0.1", 6379)  # the run starts its own redis-server
    if kind == "amqp":
        require_rabbitmq_server()  # the run restarts a node of its own
    chaos = load_benchmark("chaos")
    report = chaos.run(kind, tasks=300, replicas=3, kill_every=0.5, timeout=120)
    assert report.restarts == 1 and report.kills >= 2, report
    assert report.lost == 0, report
    assert report.unexplained == 0, report.notes


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_environment_faults_lose_nothing_and_erase_no_result(kind: str) -> None:
    """The store refusing writes, workers' clocks stepping and two operators requeueing at
    once, while workers are killed (benchmarks/chaos.py --faults runs the large one)."""
    if kind == "redis":
        require("Redis", "127.0.0.1", 6379)  # the run starts its own redis-server
    chaos = load_benchmark("chaos")
    report = chaos.run_faults(kind, tasks=120, replicas=3, kill_every=1.0, timeout=120)
    assert report.restarts == 2 and report.kills >= 2, report
    assert report.lost == 0, report
    assert report.unexplained == 0, report.notes
    assert report.wrong_results == 0, report.notes


@pytest.mark.parametrize(
    ("kind", "pool"),
    [
        ("sqlite", "solo"),
        ("sqlite", "threads"),
        ("sqlite", "processes"),
        ("redis", "threads"),
        ("amqp", "processes"),
    ],
)
def test_hostile_tasks_neither_end_nor_stall_the_fleet(kind: str, pool: str) -> None:
    """Tasks that exit, os._exit, fork, arm timers, take SIGTERM or kill task threads,
    among ordinary ones, on a --replicas fleet. Nothing restarts a shared server: Redis is
    a private one, RabbitMQ only gets queues of the run's own."""
    if kind == "redis":
        require("Redis", "127.0.0.1", 6379)  # the run starts its own redis-server
    if kind == "amqp":
        require("RabbitMQ", "127.0.0.1", 5672)
    chaos = load_benchmark("chaos")
    report = chaos.run_hostile(kind, pool, tasks=60, each=2, timeout=90)
    assert report.ok(), report.notes
