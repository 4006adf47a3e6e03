"""Prometheus metrics for a worker (`soloist worker --metrics-port PORT`), built on hooks.

Needs prometheus_client: `pip install 'soloist[metrics]'`. Counters and the run-time
histogram are updated by hooks on `app.hooks`; queue counts are read from the broker when
Prometheus scrapes (`Broker.stats`), so nothing is added to a task's path but a counter.

Replicas: every worker process serves its own port, the first free one from PORT up, so
`--replicas 4 --metrics-port 9100` serves 9100-9103 (a restarted replica takes back the
port its predecessor freed). Prometheus multiprocess mode would need a shared directory
cleaned on every restart, a supervisor serving it, and gives up per-replica `up` and
scrape-time collectors; one target per process is also what Kubernetes pods and systemd
units give.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ConfigurationError(
        "--metrics-port needs prometheus_client: pip install 'soloist[metrics]'"
    ) from exc

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("soloist.metrics")

#: Ports tried from the one given, for replicas on one machine.
PORT_RANGE = 100
#: Task run times, from a no-op to a long report.
BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)


class _Queues(Collector):
    """Queue counts of the worker's queues, read from the broker at scrape time."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {
            field: GaugeMetricFamily(f"soloist_queue_{name}", doc, labels=["queue"])
            for field, name, doc in (
                ("depth", "depth", "Messages waiting, due or delayed."),
                ("delayed", "delayed", "Waiting messages not due yet."),
                ("in_flight", "in_flight", "Messages leased to workers."),
                ("dead", "dead_letters", "Messages in the dead-letter store."),
            )
        }
        for queue in self.worker.queues:
            try:
                stats = self.worker.broker.stats(queue)
            except Exception as exc:
                log.warning("metrics: cannot read queue %s: %s", queue, exc)
                continue
            for field, family in families.items():
                value = getattr(stats, field)
                if value is not None:
                    family.add_metric([queue], value)
        yield from families.values()


def serve(worker: Worker, port: int, addr: str = "0.0.0.0") -> int:
    """Serve `worker`'s metrics over HTTP on `port` or the next free one; returns it."""
    registry = CollectorRegistry()
    tasks = Counter(
        "soloist_tasks", "Tasks settled, by outcome.", ["task", "outcome"], registry=registry
    )
    runtime = Histogram(
        "soloist_task_runtime_seconds",
        "Run time of tasks that ran.",
        ["task"],
        buckets=BUCKETS,
        registry=registry,
    )
    retries = Counter("soloist_task_retries", "Retries scheduled.", ["task"], registry=registry)
    dead = Counter(
        "soloist_dead_letters", "Messages this worker dead-lettered.", ["queue"], registry=registry
    )
    running = Gauge("soloist_tasks_running", "Tasks running in this worker.", registry=registry)
    running.set_function(lambda: len(worker.running))
    up = Gauge("soloist_worker_up", "1 while the worker consumes.", registry=registry)
    registry.register(_Queues(worker))

    hooks = worker.app.hooks

    def settled(event: str, **info: Any) -> None:
        outcome = info["outcome"]
        name = outcome.task or "?"
        tasks.labels(name, outcome.kind.value).inc()
        if event in ("task_succeeded", "task_failed", "task_retried"):
            runtime.labels(name).observe(outcome.runtime)
        if event == "task_retried":
            retries.labels(name).inc()
        elif event in ("task_failed", "dead_lettered"):
            dead.labels(info["delivery"].queue).inc()

    for event in ("task_succeeded", "task_failed", "task_retried", "task_revoked", "dead_lettered"):
        hooks.on(event)(settled)
    hooks.on("worker_start")(lambda event, **info: up.set(1))

    server = None
    for candidate in range(port, port + PORT_RANGE):
        try:
            server, _ = start_http_server(candidate, addr, registry)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                continue
            raise ConfigurationError(f"cannot serve metrics on {addr}:{candidate}: {exc}") from None
        port = candidate
        break
    if server is None:
        raise ConfigurationError(f"no free port for metrics in {port}-{port + PORT_RANGE - 1}")

    def stop(event: str, **info: Any) -> None:
        up.set(0)
        server.shutdown()

    hooks.on("worker_stop")(stop)
    log.info("metrics on http://%s:%d/metrics", addr, port)
    return port
