"""`soloist worker --metrics-port`: a real worker process, scraped over HTTP."""

from __future__ import annotations

import re
import socket
import time
import urllib.request

from soloist import App
from tests.conftest import WorkerProcesses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` with exactly these labels, from an exposition."""
    for line in text.splitlines():
        metric, _, value = line.rpartition(" ")
        base, _, rest = metric.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if base == name and found == labels:
            return float(value)
    return None


def test_metrics_of_a_running_worker(workers: WorkerProcesses, sample_app: App) -> None:
    port = free_port()
    ok = [sample_app.tasks["add"].delay(i, i) for i in range(3)]
    failed = sample_app.tasks["fail"].delay("m")
    retried = sample_app.tasks["retry_once"].delay("r")
    sample_app.tasks["sleepy"].apply_async((0,), countdown=300)  # waits, delayed
    proc = workers.start("--metrics-port", str(port))
    for result in [*ok, retried]:
        result.wait(timeout=20)
    failed.wait(timeout=20)
    long = sample_app.tasks["sleepy"].delay(60, "long")
    workers.wait_for("start long")
    deadline = time.monotonic() + 10
    while sample(text := scrape(port), "soloist_tasks_total", task="add", outcome="succeeded") != 3:
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    assert sample(text, "soloist_tasks_total", task="fail", outcome="failed") == 1
    assert sample(text, "soloist_tasks_total", task="retry_once", outcome="retried") == 1
    assert sample(text, "soloist_tasks_total", task="retry_once", outcome="succeeded") == 1
    assert sample(text, "soloist_task_retries_total", task="retry_once") == 1
    assert sample(text, "soloist_dead_letters_total", queue="default") == 1
    assert sample(text, "soloist_task_runtime_seconds_count", task="add") == 3
    assert sample(text, "soloist_tasks_running") == 1
    assert sample(text, "soloist_worker_up") == 1
    assert sample(text, "soloist_queue_depth", queue="default") == 1
    assert sample(text, "soloist_queue_delayed", queue="default") == 1
    assert sample(text, "soloist_queue_in_flight", queue="default") == 1
    assert sample(text, "soloist_queue_dead_letters", queue="default") == 1
    assert long.revoke(terminate=True)
    proc.terminate()
    assert proc.wait(timeout=20) == 0


def test_two_workers_on_one_port_take_the_next(workers: WorkerProcesses) -> None:
    port = free_port()
    first = workers.start("--metrics-port", str(port))
    assert "soloist_worker_up" in scrape(port)
    workers.start("--metrics-port", str(port))
    assert "soloist_worker_up" in scrape(port + 1)
    first.terminate()
    assert first.wait(timeout=20) == 0
