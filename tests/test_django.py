"""soloist.contrib.django against a real minimal Django project (tests/django_project):
settings, autodiscovery, delay_on_commit, and a real worker writing model rows."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

django = pytest.importorskip("django")

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from soloist.contrib import django as soloist_django  # noqa: E402
from soloist.errors import ConfigurationError  # noqa: E402
from soloist.testing import drain  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

SETTINGS = "tests.django_project.settings"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Django set up in this process on the test project (once: Django cannot be set up
    twice); the environment a worker process needs. DJANGO_SETTINGS_MODULE is removed
    after, so that Celery's Django fixup stays off in later tests."""
    tmp = tmp_path_factory.mktemp("django")
    env = {
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "NOTES_DATABASE": str(tmp / "notes.sqlite3"),
        "NOTES_BROKER": f"sqlite:///{tmp}/soloist.db",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        for name in ("SOLOIST_BROKER_URL", "SOLOIST_RESULT_URL"):
            mp.delenv(name, raising=False)
        django.setup()
        call_command("migrate", run_syncdb=True, verbosity=0)
        yield env
    soloist_django.get_app().close()


@pytest.fixture
def notes(project: dict[str, str]) -> Iterator[None]:
    from tests.django_project.notes.models import Note

    app = soloist_django.get_app()
    app.broker.purge("notes")
    Note.objects.all().delete()
    yield
    connection.close()


def test_the_app_comes_from_settings_and_finds_tasks(project: dict[str, str]) -> None:
    app = soloist_django.app
    assert app is soloist_django.get_app()
    assert app.broker_url == project["NOTES_BROKER"]
    assert app.result_url == project["NOTES_BROKER"]  # beside the broker, as any App
    assert app.default_queue == "notes"
    # Nothing imported the tasks module: autodiscovery did.
    assert "tests.django_project.notes.tasks.write_note" in app.tasks


def test_settings_name_the_broker_or_fail_clearly(project: dict[str, str]) -> None:
    from django.test import override_settings

    with override_settings(SOLOIST=None, SOLOIST_BROKER_URL="memory://"):
        assert soloist_django.from_settings().broker_url == "memory://"
    with (
        override_settings(SOLOIST={"brokr": "memory://"}),
        pytest.raises(ConfigurationError, match=r"bad SOLOIST setting.*brokr"),
    ):
        soloist_django.from_settings()


def test_a_worker_without_django_settings_says_so_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    proc = subprocess.run(
        [sys.executable, "-m", "soloist", "worker", "-A", "soloist.contrib.django:app"],
        env={**env, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, text=True,
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("Error: Django is not configured:"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_delay_on_commit_sends_only_what_commits(project: dict[str, str], notes: None) -> None:
    from tests.django_project.notes.models import Note
    from tests.django_project.notes.tasks import write_note

    app = soloist_django.app
    with pytest.raises(RuntimeError), transaction.atomic():
        write_note.delay_on_commit("rolled back")
        assert app.broker.depth("notes") == 0  # not yet: the transaction is open
        raise RuntimeError("roll back")
    assert app.broker.depth("notes") == 0
    with transaction.atomic():
        write_note.delay_on_commit("committed")
        assert app.broker.depth("notes") == 0
    assert app.broker.depth("notes") == 1
    with pytest.raises(TypeError, match="arguments do not fit"):
        write_note.delay_on_commit()  # type: ignore[call-arg]  # checked in the request

    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLOIST_")}
    proc = subprocess.run(
        [sys.executable, "-m", "soloist", "worker", "-A", "soloist.contrib.django:app",
         "-Q", "notes", "--burst"],
        env={**env, **project, "PYTHONPATH": str(ROOT)}, cwd=ROOT, text=True,
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = list(Note.objects.values_list("text", "pid"))
    assert len(rows) == 1, rows
    assert rows[0][0] == "committed" and rows[0][1] != os.getpid()  # the worker wrote it


def test_the_worker_closes_a_stale_connection_before_a_task(
    project: dict[str, str], notes: None
) -> None:
    from tests.django_project.notes.models import Note
    from tests.django_project.notes.tasks import write_note

    connection.ensure_connection()
    stale = connection.connection
    connection.close_at = time.monotonic() - 1  # as if older than CONN_MAX_AGE
    write_note.delay("after a stale connection")
    stats = drain(soloist_django.app, ["notes"])
    assert stats.done == 1
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        stale.execute("select 1")  # the hook closed it; the task opened a new one
    assert Note.objects.filter(text="after a stale connection").count() == 1


@pytest.mark.parametrize("pool", ["solo", "threads", "processes"])
def test_each_task_gets_a_fresh_connection_in_every_pool(
    project: dict[str, str], notes: None, pool: str
) -> None:
    """CONN_MAX_AGE is 0 (Django's default): as a request, each task closes its
    connection when it ends, where it ran, so the next opens one (without the runner's
    close_old_connections, a thread or child keeps its first connection for good)."""
    from tests.django_project.notes.tasks import count_notes

    results = [count_notes.delay() for _ in range(3)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLOIST_")}
    proc = subprocess.run(
        [sys.executable, "-m", "soloist", "worker", "-A", "soloist.contrib.django:app",
         "-Q", "notes", "--burst", "--pool", pool],
        env={**env, **project, "PYTHONPATH": str(ROOT)}, cwd=ROOT, text=True,
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = [r.get(timeout=10) for r in results]
    assert len({pid for pid, _ in runs}) == 1, runs  # one process ran them all
    assert sorted(opened for _, opened in runs) == [1, 2, 3], runs
