"""Hosts as network namespaces (benchmarks/hosts.py runs every scenario on demand): one
worker host cut off from the broker for longer than the lease."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def namespaces_work() -> str | None:
    """None if this process may create network namespaces, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "redis-server"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    name = f"soloist-probe-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def load_hosts() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hosts", ROOT / "benchmarks" / "hosts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hosts"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_partitioned_host_loses_nothing_and_overwrites_nothing(tmp_path: Path) -> None:
    reason = namespaces_work()
    if reason is not None:
        pytest.skip(reason)
    hosts = load_hosts()
    report = hosts.run("partition", tasks=6, outage=6.0, lease=1.5, tmp=tmp_path)
    assert report.lost == 0 and report.unexplained == 0, report
    assert report.wrong_results == 0, report.notes
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"soloist-{os.getpid()}-" not in leftover
