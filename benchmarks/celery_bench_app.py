"""The Celery app of benchmarks/celery_bench.py, run by `celery worker` and `soloist worker`
alike. Broker and backend: CELERY_BENCH_REDIS (default redis://127.0.0.1:6379/15), every
key under the prefix in CELERY_BENCH_PREFIX."""

from __future__ import annotations

import os
import time

from celery import Celery

REDIS = os.environ.get("CELERY_BENCH_REDIS", "redis://127.0.0.1:6379/15")
PREFIX = os.environ.get("CELERY_BENCH_PREFIX", "celery-bench:")

app = Celery("celery_bench_app", broker=REDIS, backend=REDIS)
app.conf.update(
    broker_transport_options={"global_keyprefix": PREFIX},
    result_backend_transport_options={"global_keyprefix": PREFIX},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task
def noop() -> None:
    return None


@app.task
def started() -> float:
    """When it started: the producer subtracts when it sent it."""
    return time.time()


@app.task(ignore_result=True)
def noop_quiet() -> None:
    return None
