"""An unchanged Celery app, run by `soloist worker -A tests.support.celery_sample:app` in the tests
of soloist.celery (and by `celery worker` in its benchmark).

Broker and backend are the test Redis (SOLOIST_TEST_REDIS_URL), or the broker RabbitMQ
(SOLOIST_CELERY_BROKER); every key goes under the prefix in SOLOIST_CELERY_PREFIX and
tasks go to the queue SOLOIST_CELERY_QUEUE, so each test has queues of its own. Tasks that leave a
trace append lines to the file named by SOLOIST_TEST_LEDGER.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from celery import Celery, shared_task, signals
from celery.exceptions import SoftTimeLimitExceeded

REDIS_URL = os.environ.get("SOLOIST_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PREFIX = os.environ.get("SOLOIST_CELERY_PREFIX", "celerytest:")

BROKER_URL = os.environ.get("SOLOIST_CELERY_BROKER", REDIS_URL)

app = Celery("celery_sample", broker=BROKER_URL, backend=REDIS_URL)
app.conf.update(
    broker_transport_options={"global_keyprefix": PREFIX, "visibility_timeout": 3600},
    result_backend_transport_options={"global_keyprefix": PREFIX},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue=os.environ.get("SOLOIST_CELERY_QUEUE", "celery"),
    broker_heartbeat=float(os.environ.get("SOLOIST_CELERY_HEARTBEAT", "120")),
)
if os.environ.get("SOLOIST_CELERY_VISIBILITY"):
    app.conf.broker_transport_options["visibility_timeout"] = float(
        os.environ["SOLOIST_CELERY_VISIBILITY"]
    )


def ledger(line: str) -> None:
    path = os.environ.get("SOLOIST_TEST_LEDGER")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@signals.worker_process_init.connect
def _process_started(**kwargs: Any) -> None:
    ledger(f"worker_process_init {os.getpid()}")


def _square(x: int) -> int:
    return x * x


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task
def noop() -> None:
    return None


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(bind=True, max_retries=3, default_retry_delay=0.1)
def flaky(self: Any, succeed_on: int) -> int:
    """Fails until its `succeed_on`-th retry; returns the retry it succeeded on."""
    ledger(f"flaky {self.request.id} {self.request.retries}")
    if self.request.retries < succeed_on:
        raise self.retry(exc=ConnectionError(f"try {self.request.retries}"))
    return int(self.request.retries)


@app.task(bind=True, autoretry_for=(KeyError,), max_retries=2, default_retry_delay=0.1)
def always_keyerror(self: Any) -> None:
    ledger(f"keyerror {self.request.id} {self.request.retries}")
    raise KeyError("missing")


@app.task(acks_late=True)
def sleeper(seconds: float, tag: str) -> str:
    ledger(f"start {tag}")
    time.sleep(seconds)
    ledger(f"end {tag}")
    return tag


@app.task(time_limit=1)
def stuck() -> None:
    ledger("stuck")
    while True:
        time.sleep(0.05)


@app.task(soft_time_limit=0.5)
def soft() -> str:
    try:
        while True:
            time.sleep(0.05)
    except SoftTimeLimitExceeded:
        return "cleaned up"


@app.task(track_started=True)
def tracked(seconds: float) -> str:
    ledger("tracked running")
    time.sleep(seconds)
    return "done"


@app.task(ignore_result=True)
def quiet(tag: str) -> None:
    ledger(f"quiet {tag}")


@app.task
def squares(n: int) -> list[int]:
    """The seed case: a task that fans out to its own process pool."""
    with ProcessPoolExecutor(max_workers=2) as pool:
        return list(pool.map(_square, range(n)))


@shared_task
def shared_mul(a: int, b: int) -> int:
    return a * b


@app.task
def tsum(values: list[int]) -> int:
    return sum(values)


@app.task
def on_error(request: Any, exc: BaseException, traceback: str) -> None:
    """A link_error callback (Celery's errback signature)."""
    ledger(f"errback {request.id} {type(exc).__name__}")
