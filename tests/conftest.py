"""Shared fixtures: apps on memory or SQLite, and real worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from soloist import App
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from benchmarks.rabbit_node import Node
    from tests.support.redis_cluster_support import RedisCluster
    from tests.support.redis_support import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `slow` tests first: run in parallel (pytest-xdist), a minute-long test started
    last would keep one process busy after the others have finished."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def app() -> Iterator[App]:
    """An app on the in-memory broker and result store."""
    app = App("memory://", "memory://")
    yield app
    app.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/soloist.db"


class WorkerProcesses:
    """Starts `soloist worker` processes against one SQLite file, and stops them after."""

    def __init__(self, url: str, ledger: Path) -> None:
        self.url = url
        self.ledger = ledger
        self.env = {
            **os.environ,
            "SOLOIST_BROKER_URL": url,
            "SOLOIST_RESULT_URL": url,
            "SOLOIST_TEST_LEDGER": str(ledger),
            "PYTHONPATH": str(ROOT),
        }
        self.procs: list[subprocess.Popen[str]] = []
        ledger.touch()

    def use(self, broker: str, results: str | None = None) -> None:
        """Point the workers started from now on at `broker` and `results` (default: the
        broker's URL, as `url` is both)."""
        self.env["SOLOIST_BROKER_URL"] = broker
        self.env["SOLOIST_RESULT_URL"] = broker if results is None else results

    def start(self, *args: str, app: str = "tests.support.sample_app:app") -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "soloist", "worker", "-A", app, "--loglevel", "info", *args]
        # Output goes to a file: a pipe nobody reads would fill up and block the worker.
        with open(self.ledger.with_name(f"worker-{len(self.procs)}.log"), "w") as log:
            proc = subprocess.Popen(
                cmd, env=self.env, cwd=ROOT, text=True, stdout=log, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[str]) -> str:
        index = self.procs.index(proc)
        return self.ledger.with_name(f"worker-{index}.log").read_text()

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the CLI to completion (e.g. a --burst worker)."""
        cmd = [sys.executable, "-m", "soloist", *args]
        return subprocess.run(
            cmd, env=self.env, cwd=ROOT, text=True, capture_output=True, timeout=timeout
        )

    def lines(self) -> list[str]:
        return self.ledger.read_text().splitlines()

    def wait_for(self, predicate: str, timeout: float = 20) -> None:
        """Wait until a ledger line starts with `predicate`."""
        wait_until(
            lambda: any(line.startswith(predicate) for line in self.lines()),
            timeout,
            f"a ledger line {predicate!r}",
        )

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def workers(sqlite_url: str, tmp_path: Path) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(sqlite_url, tmp_path / "ledger.txt")
    yield procs
    procs.stop_all()


@pytest.fixture
def sample_app(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """The sample app (tests.support.sample_app), pointed at this test's SQLite file."""
    from tests.support import sample_app

    sample_app.app.configure(sqlite_url, sqlite_url)
    yield sample_app.app
    sample_app.app.close()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the test module's own (persisting every write), so command counts
    and restarts touch nothing else."""
    from tests.support.redis_support import RedisServer

    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A private 3-master Redis Cluster shared by the session's tests, started by the first
    that asks (the broker matrix's `redis-cluster`), stopped and deleted at the end."""
    from tests.support.redis_cluster_support import running_cluster, stop_session_cluster

    try:
        yield running_cluster()
    finally:
        stop_session_cluster()


@pytest.fixture(scope="session")
def rabbit_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A private RabbitMQ node (tests/support/rabbit_node_support.py) for the tests that
    restart or retune the server. Under pytest-xdist each worker process that asks boots its
    own, so the tests that use it share the `xdist_group` "rabbit_node"."""
    from tests.support.rabbit_node_support import running_node

    with running_node(tmp_path_factory.mktemp("rabbit")) as node:
        yield node
