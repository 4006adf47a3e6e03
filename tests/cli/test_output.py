"""Output that scripts can read: whole values off a terminal, ids never cut on one, and the
same counts as --json (RabbitMQ's in-flight count included)."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator

import pytest
from rich.console import Console

from soloist import App
from soloist.cli.status import render
from soloist.cli.tables import Column, table
from tests.conftest import WorkerProcesses
from tests.support.servers import AMQP_URL, require

APP = ("-A", "tests.support.sample_app:app")


def wait_json(workers: WorkerProcesses, check: str, timeout: float = 20) -> dict[str, object]:
    """`status --json` once `check` (a key path like "in_flight") is non-zero on default."""
    deadline = time.monotonic() + timeout
    while True:
        snap = json.loads(workers.run("status", *APP, "--json").stdout)
        if any(q[check] for q in snap["queues"]) and all(w["running"] for w in snap["workers"]):
            return snap  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, snap
        time.sleep(0.2)


def test_status_off_a_terminal_is_tab_separated_and_whole(
    workers: WorkerProcesses, sample_app: App
) -> None:
    long = sample_app.tasks["sleepy"].delay(60, "long")
    workers.start()
    workers.wait_for("start long")
    snap = wait_json(workers, "in_flight")
    done = workers.run("status", *APP)  # stdout is a pipe
    queues, workers_part = done.stdout.split("\n\n")
    header, *rows = queues.splitlines()
    assert header.split("\t") == [
        "queue", "waiting", "of them delayed", "in flight", "dead letters", "lost",
    ]  # fmt: skip
    by_name = {row.split("\t")[0]: row.split("\t") for row in rows}
    for q in snap["queues"]:  # type: ignore[attr-defined]
        cells = by_name[q["queue"]]
        assert cells[1:5] == [f"{q[k]:,}" for k in ("depth", "delayed", "in_flight", "dead")]
    worker_header, worker_row = workers_part.splitlines()
    cells = dict(zip(worker_header.split("\t"), worker_row.split("\t"), strict=True))
    assert f"sleepy[{long.id}]" in cells["running"]  # the id whole, not cut at 80 columns
    assert cells["worker"] == snap["workers"][0]["id"]  # type: ignore[index]


def test_at_80_columns_ids_stay_whole_and_free_text_is_cut() -> None:
    task_id, worker_id = (
        uuid.uuid4().hex,
        f"a-long-host-name.example.org.12345.{uuid.uuid4().hex[:6]}",
    )
    now = time.time()
    snap = {
        "time": now,
        "queues": [
            {"queue": "default", "depth": 1, "delayed": 0, "in_flight": 1, "dead": 0, "lost": 0}
        ],
        "workers": [
            {
                "id": worker_id, "host": "a-long-host-name.example.org", "pid": 12345,
                "pool": "solo", "concurrency": 1, "queues": ["default"], "done": 7, "failed": 0,
                "running": [{"task": "myproj.tasks.send_report", "id": task_id, "for": 3.0}],
                "held": {}, "last_seen": now, "gone": False,
            }
        ],
    }  # fmt: skip
    out = io.StringIO()
    Console(file=out, width=80).print(render(snap))
    text = out.getvalue()
    assert worker_id in text and "a-long-host-name.example.org" in text
    letters = table(
        None,
        [Column("id"), Column("task id"), Column("reason", cut=True)],
        [[uuid.uuid4().hex, task_id, "RuntimeError: " + "a very long reason " * 20]],
    )
    out = io.StringIO()
    Console(file=out, width=80).print(letters)
    text = out.getvalue()
    assert task_id in text and "a very long reason " * 2 not in text  # cut: the reason
    assert max(len(line) for line in text.splitlines()) <= 80


@pytest.fixture
def amqp_queue() -> Iterator[str]:
    require("RabbitMQ", "127.0.0.1", 5672)
    from soloist.brokers.amqp import AMQPBroker

    name = f"status-{uuid.uuid4().hex[:8]}"
    yield name
    broker = AMQPBroker(AMQP_URL)
    broker.delete(name)
    broker.close()


def test_status_on_rabbitmq_shows_numbers(
    workers: WorkerProcesses, sample_app: App, amqp_queue: str
) -> None:
    workers.use(AMQP_URL, workers.url)
    producer = App(AMQP_URL, workers.url)
    try:
        producer.send_task("sleepy", (60, "long"), queue=amqp_queue)
        workers.start("-Q", amqp_queue)
        workers.wait_for("start long")
        deadline = time.monotonic() + 20
        while True:
            done = workers.run("status", *APP, "-Q", amqp_queue, "--json")
            (queue,) = [q for q in json.loads(done.stdout)["queues"] if q["queue"] == amqp_queue]
            if queue["in_flight"] == 1:
                break
            assert time.monotonic() < deadline, queue
            time.sleep(0.2)
        assert None not in (queue["depth"], queue["delayed"], queue["dead"])
        text = workers.run("status", *APP, "-Q", amqp_queue).stdout
        row = next(line for line in text.splitlines() if line.startswith(amqp_queue + "\t"))
        assert "?" not in row.split("\t")[1:5], row
    finally:
        workers.stop_all()
        producer.close()
