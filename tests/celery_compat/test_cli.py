"""Soloist's operator commands on a Celery app: status, revoke, dead letters, and a clear
refusal for a broker the adapter does not speak."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.celery_compat.conftest import CeleryRig
from tests.conftest import ROOT

exceptions = pytest.importorskip("celery.exceptions")


def soloist(rig: CeleryRig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "soloist", *args], env=rig.env, cwd=ROOT, text=True,
        capture_output=True, timeout=60,
    )  # fmt: skip


def test_status_revoke_and_dead_letters(rig: CeleryRig) -> None:
    rig.worker()
    assert rig.send("add", 1, 1).get(timeout=20) == 2
    status = soloist(rig, "status", "-A", "tests.support.celery_sample:app", "--json")
    assert status.returncode == 0, status.stderr
    assert '"celery"' in status.stdout
    later = rig.send("add", 2, 2, countdown=60)  # revoked long before it is due
    revoked = soloist(rig, "revoke", "-A", "tests.support.celery_sample:app", later.id)
    assert revoked.returncode == 0, revoked.stderr
    with pytest.raises(exceptions.TaskRevokedError):
        later.get(timeout=10)
    failed = rig.send("fail", "kept")
    with pytest.raises(ValueError):
        failed.get(timeout=10)
    listed = soloist(
        rig, "dead-letters", "list", "-A", "tests.support.celery_sample:app", "-Q", "celery",
        "--json",
    )
    assert listed.returncode == 0, listed.stderr
    assert "ValueError: kept" in listed.stdout
    assert "tests.support.celery_sample.fail" in listed.stdout


def test_a_broker_it_does_not_speak_is_one_line_and_exit_1(rig: CeleryRig) -> None:
    rig.env["SOLOIST_CELERY_BROKER"] = "sqs://"
    done = soloist(rig, "worker", "-A", "tests.support.celery_sample:app")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: the Celery app's broker is sqs://"), done.stderr


def test_enqueue_sends_a_celery_message(rig: CeleryRig) -> None:
    rig.worker()
    done = soloist(
        rig, "enqueue", "-A", "tests.support.celery_sample:app", "tests.support.celery_sample.add",
        "--args", "[20, 22]", "--task-id", "enqueued-1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert rig.app.AsyncResult("enqueued-1").get(timeout=20) == 42
