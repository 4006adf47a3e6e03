"""Celery is an optional extra: Soloist imports and runs its own apps without it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

_BLOCKED = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("celery", "kombu", "amqp"):
            raise ImportError(f"{name} is not installed")
sys.meta_path.insert(0, Block())
import soloist, soloist.adapters, soloist.brokers, soloist.results, soloist.worker
import soloist.cli.common, soloist.cli.worker, soloist.pools.processes
from soloist.cli.common import load_app
app = load_app("tests.support.sample_app:app")
assert not [m for m in sys.modules if m.split(".")[0] in ("celery", "kombu", "amqp")]
print("ok")
"""


def test_soloist_works_without_celery() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKED], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "ok", done.stderr
