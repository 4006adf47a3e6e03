"""Celery's own producer and AsyncResult against `soloist worker` processes, on the test
Redis, under a key prefix of each test's own (kombu's and the backend's global_keyprefix)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import ROOT
from tests.support.servers import AMQP_URL, REDIS_URL, require
from tests.support.waiting import wait_until

CELERY_APP = "tests.support.celery_sample:app"

celery = pytest.importorskip("celery")


class CeleryRig:
    """A Celery producer app and Soloist (or Celery) worker processes, on one prefix."""

    def __init__(
        self, tmp: Path, visibility: float = 3600, broker: str = REDIS_URL, heartbeat: float = 120
    ) -> None:
        self.prefix = f"soloist-celery-{uuid.uuid4().hex[:10]}:"
        #: On RabbitMQ, what keeps the tests apart is the queue's name.
        self.queue = "celery" if broker == REDIS_URL else f"soloist-celery-{uuid.uuid4().hex[:10]}"
        self.broker = broker
        self.ledger = tmp / "ledger.txt"
        self.ledger.touch()
        self.tmp = tmp
        self.env = {
            **os.environ,
            "SOLOIST_CELERY_PREFIX": self.prefix,
            "SOLOIST_CELERY_VISIBILITY": str(visibility),
            "SOLOIST_TEST_LEDGER": str(self.ledger),
            "SOLOIST_TEST_REDIS_URL": REDIS_URL,
            "SOLOIST_CELERY_BROKER": broker,
            "SOLOIST_CELERY_QUEUE": self.queue,
            "SOLOIST_CELERY_HEARTBEAT": str(heartbeat),
            "PYTHONPATH": str(ROOT),
        }
        options = {"global_keyprefix": self.prefix, "visibility_timeout": visibility}
        self.app = celery.Celery("producer", broker=broker, backend=REDIS_URL)
        self.app.conf.update(
            task_default_queue=self.queue,
            broker_transport_options=options,
            result_backend_transport_options={"global_keyprefix": self.prefix},
        )
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.procs: list[subprocess.Popen[str]] = []

    def send(self, name: str, *args: Any, **options: Any) -> Any:
        """`send_task` of a task of tests.support.celery_sample: an AsyncResult."""
        return self.app.send_task(f"tests.support.celery_sample.{name}", args, **options)

    def worker(self, *args: str, command: str = "soloist") -> subprocess.Popen[str]:
        if command == "soloist":
            cmd = [sys.executable, "-m", "soloist", "worker", "-A", CELERY_APP]
            cmd += ["-Q", self.queue]
        else:
            cmd = [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker"]
            cmd += ["-Q", self.queue]
        log = self.tmp / f"worker-{len(self.procs)}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [*cmd, *args], env=self.env, cwd=ROOT, text=True, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[str]) -> str:
        return (self.tmp / f"worker-{self.procs.index(proc)}.log").read_text()

    def lines(self) -> list[str]:
        return self.ledger.read_text().splitlines()

    def wait_for(self, check: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
        wait_until(check, timeout, f"{what} (ledger: {self.lines()})")

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if self.queue != "celery":
            with self.app.connection_for_write() as conn:
                for name in (self.queue, f"{self.queue}.soloist.dead"):
                    conn.default_channel.queue_delete(name)
        self.app.close()
        keys = list(self.redis.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            self.redis.delete(*keys)
        self.redis.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[CeleryRig]:
    require("Redis", "127.0.0.1", 6379)
    rig = CeleryRig(tmp_path)
    yield rig
    rig.close()


@pytest.fixture
def amqp_rig(tmp_path: Path) -> Iterator[CeleryRig]:
    """Celery's broker on the shared RabbitMQ (a queue of the test's own), results on Redis."""
    require("Redis", "127.0.0.1", 6379)
    require("RabbitMQ", "127.0.0.1", 5672)
    rig = CeleryRig(tmp_path, broker=AMQP_URL.rstrip("/") + "//", heartbeat=2)
    yield rig
    rig.close()


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., CeleryRig]]:
    require("Redis", "127.0.0.1", 6379)
    made: list[CeleryRig] = []

    def make(**options: Any) -> CeleryRig:
        made.append(CeleryRig(tmp_path, **options))
        return made[-1]

    yield make
    for rig in made:
        rig.close()
