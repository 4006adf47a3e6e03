"""A process a task starts, of one kind: `python -m tests.support.tree_child KIND`.

Each one appends `tree KIND PID` to the test ledger once it runs, then sleeps until killed.

* plain: just sleeps.
* stubborn: ignores SIGTERM (only the SIGKILL after the grace ends it).
* parent: starts a plain grandchild first.
* session: calls setsid(), leaving the worker's session and process group.
* daemon: the double fork of a daemon: a setsid() grandchild whose parent exits, so it is
  orphaned (and re-parented to the nearest subreaper).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.support.sample_app import ledger


def main(kind: str) -> None:
    if kind == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif kind == "parent":
        subprocess.Popen([sys.executable, "-m", "tests.support.tree_child", "plain"])
    elif kind == "session":
        os.setsid()
    elif kind == "daemon":
        if os.fork():
            os._exit(0)
        os.setsid()
    ledger(f"tree {kind} {os.getpid()}")
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1])
