"""The command line as people use it: `result`, `enqueue`'s options, a group-level -A,
refusals with a hint, errors that name the culprit, and the exit codes the README lists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from soloist import App
from tests.conftest import ROOT, WorkerProcesses
from tests.test_cli import assert_one_line_error

APP = ("-A", "tests.support.sample_app:app")


def test_result_shows_state_value_and_error(workers: WorkerProcesses, sample_app: App) -> None:
    good = sample_app.tasks["add"].delay(20, 22)
    bad = sample_app.tasks["fail"].delay("x")
    waiting = workers.run("result", *APP, good.id)
    assert (waiting.returncode, waiting.stdout) == (3, "PENDING\n")
    assert workers.run("worker", *APP, "--burst").returncode == 0
    done = workers.run("result", *APP, good.id)
    assert (done.returncode, done.stdout) == (0, "SUCCESS\n42\n")
    failed = workers.run("result", *APP, bad.id, "--wait", "5")
    assert failed.returncode == 1
    lines = failed.stdout.splitlines()
    assert lines[:2] == ["FAILURE", "RuntimeError: failing x"] and "Traceback" in lines[2]
    record = json.loads(workers.run("result", *APP, bad.id, "--json").stdout)
    assert record["id"] == bad.id and record["state"] == "FAILURE"
    assert record["exc_type"] == "RuntimeError" and "raise RuntimeError" in record["traceback"]


def test_result_waits(workers: WorkerProcesses, sample_app: App) -> None:
    call = sample_app.tasks["add"].delay(1, 1)
    workers.start()
    done = workers.run("result", *APP, call.id, "--wait", "20")
    assert (done.returncode, done.stdout) == (0, "SUCCESS\n2\n")


def test_enqueue_options(workers: WorkerProcesses, sample_app: App) -> None:
    sent = workers.run(
        "enqueue", *APP, "add", "--args", "[1, 2]", "-Q", "other", "--priority", "3",
        "--countdown", "300", "--task-id", "job-1",
    )  # fmt: skip
    assert (sent.returncode, sent.stdout) == (0, "job-1\n"), sent.stderr
    stats = sample_app.broker.stats("other")
    assert (stats.depth, stats.delayed) == (1, 1)
    again = workers.run(
        "enqueue", *APP, "add", "--args", "[1, 2]", "-Q", "other", "--task-id", "job-1"
    )
    assert again.returncode == 0 and sample_app.broker.depth("other") == 1
    at = workers.run("enqueue", *APP, "add", "--args", "[1, 2]", "--eta", "2999-01-01T00:00:00")
    assert at.returncode == 0 and sample_app.broker.stats("default").delayed == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", "--args", "{"], "Invalid value for --args: not JSON"),
        (["add", "--args", "[1, 2, 3]"], "arguments do not fit add"),
        (["add", "--eta", "soon"], "Invalid value for '--eta'"),
        (["add", "--countdown", "1", "--eta", "1"], "not both"),
    ],
)
def test_enqueue_errors_name_the_culprit(
    workers: WorkerProcesses, args: list[str], says: str
) -> None:
    done = workers.run("enqueue", *APP, *args)
    assert_one_line_error(done, 2)
    assert says in done.stderr, done.stderr


def test_a_group_level_app_and_soloist_app(workers: WorkerProcesses, sample_app: App) -> None:
    call = sample_app.tasks["add"].delay(2, 3)
    done = workers.run("-A", "tests.support.sample_app:app", "worker", "--burst")
    assert done.returncode == 0, done.stderr
    assert call.get(timeout=1) == 5
    workers.env["SOLOIST_APP"] = "tests.support.sample_app:app"
    assert workers.run("result", call.id).stdout == "SUCCESS\n5\n"
    assert "SOLOIST_APP" in workers.run("--help").stdout
    del workers.env["SOLOIST_APP"]
    assert_one_line_error(workers.run("status"), 2)


def test_a_group_level_app_reaches_the_replicas(workers: WorkerProcesses, sample_app: App) -> None:
    call = sample_app.tasks["add"].delay(2, 3)
    done = workers.run("-A", "tests.support.sample_app:app", "worker", "--replicas", "1", "--burst")
    assert done.returncode == 0, done.stderr
    assert call.get(timeout=1) == 5


def test_concurrency_with_the_solo_pool_is_refused_with_a_hint(workers: WorkerProcesses) -> None:
    done = workers.run("worker", *APP, "-c", "4")
    assert_one_line_error(done, 2)
    assert "--pool threads -c 4" in done.stderr and "--replicas 4" in done.stderr


def test_help_shows_every_default(workers: WorkerProcesses) -> None:
    text = workers.run("worker", "--help").stdout
    blocks = text.split("Options:")[1].split("\n  -")[1:]
    assert len(blocks) > 10
    for block in blocks:
        flat = " ".join(block.split())
        if flat.startswith(("-burst", "-beat", "-help")):  # flags: off unless given
            continue
        assert "default:" in flat, f"no default shown for -{flat}"
    assert "[default: (the app's default queue: default)]" in " ".join(text.split())


def test_import_errors_name_the_file_and_line(workers: WorkerProcesses, tmp_path: Path) -> None:
    (tmp_path / "brokenapp.py").write_text("from soloist import App\n\nimport no_such_dep\n")
    workers.env["PYTHONPATH"] = f"{ROOT}:{tmp_path}"
    done = workers.run("worker", "-A", "brokenapp:app", "--burst")
    assert_one_line_error(done, 2)
    assert f"{tmp_path}/brokenapp.py, line 3" in done.stderr and "no_such_dep" in done.stderr
    missing = workers.run("worker", "-A", "tests.support.sample_app:missing")
    assert "module 'tests.support.sample_app' has no attribute 'missing'" in missing.stderr


def test_amqp_connection_refused_names_host_and_port(workers: WorkerProcesses) -> None:
    from tests.support.redis_support import refusing_port

    with refusing_port() as port:
        workers.use(f"amqp://guest:guest@127.0.0.1:{port}/", workers.url)
        done = workers.run("worker", *APP, "--burst")
    assert_one_line_error(done, 1)
    assert "connection refused" in done.stderr.lower() and f"127.0.0.1:{port}" in done.stderr


def test_the_readme_exit_codes_are_the_cli_s() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "2 for a usage error" in readme and "2 on a usage error" in readme
    usage = subprocess.run(
        [sys.executable, "-m", "soloist", "worker", "--lease", "x",
         "-A", "tests.support.sample_app:app"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert usage.returncode == 2
