"""No password from a broker or result URL in any log line, error message or status output.

(The local Redis has no password and accepts any; RabbitMQ refuses a wrong one.)
"""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import WorkerProcesses
from tests.support.servers import require

SECRET = "s3cretPW"


@pytest.mark.parametrize(
    "url",
    [f"redis://:{SECRET}@127.0.0.1:6379/15", f"amqp://guest:{SECRET}@127.0.0.1:5672/"],
    ids=["redis", "amqp"],
)
@pytest.mark.parametrize("command", ["worker", "status", "dead-letters"])
def test_a_refused_password_is_never_shown(
    workers: WorkerProcesses, url: str, command: str
) -> None:
    require(
        "Redis" if url.startswith("redis") else "RabbitMQ",
        "127.0.0.1",
        6379 if url.startswith("redis") else 5672,
    )
    workers.use(url)
    args = {"worker": ["--burst", "--loglevel", "debug"], "dead-letters": ["list"]}
    done = workers.run(command, "-A", "tests.support.sample_app:app", *args.get(command, []))
    out = done.stdout + done.stderr
    if url.startswith("amqp"):
        assert done.returncode != 0, out  # RabbitMQ refuses the password
    assert SECRET not in out
    assert "Traceback" not in out


def test_a_working_password_is_never_logged(workers: WorkerProcesses) -> None:
    require("RabbitMQ", "127.0.0.1", 5672)
    queue = f"secret-{uuid.uuid4().hex[:8]}"
    url = "amqp://guest:guest@127.0.0.1:5672/?queue_expires=60"
    workers.use(url, "sqlite:///" + str(workers.ledger.with_name("r.db")))
    sent = workers.run(
        "enqueue", "-A", "tests.support.sample_app:app", "add", "--args", "[1, 2]", "--queue", queue
    )
    assert sent.returncode == 0, sent.stderr
    done = workers.run(
        "worker",
        "-A",
        "tests.support.sample_app:app",
        "--burst",
        "-Q",
        queue,
        "--loglevel",
        "debug",
        "--log-format",
        "json",
    )
    status = workers.run("status", "-A", "tests.support.sample_app:app", "-Q", queue, "--json")
    for out in (sent, done, status):
        text = out.stdout + out.stderr
        assert ":guest@" not in text, text
    assert done.returncode == 0, done.stderr
