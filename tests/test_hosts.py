"""Hosts as network namespaces (benchmarks/hosts.py runs every scenario on demand): one
worker host cut off from the broker for longer than the lease."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.benchmarks import load_benchmark
from tests.support.waiting import wait_until


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


@pytest.mark.slow
def test_a_partitioned_host_loses_nothing_and_overwrites_nothing(tmp_path: Path) -> None:
    reason = namespaces_work()
    if reason is not None:
        pytest.skip(reason)
    hosts = load_benchmark("hosts")
    report = hosts.run("partition", tasks=6, outage=6.0, lease=1.5, tmp=tmp_path)
    assert report.lost == 0 and report.unexplained == 0, report
    assert report.wrong_results == 0, report.notes
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"soloist-{os.getpid()}-" not in leftover


@pytest.mark.slow
def test_a_slow_lossy_link_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers two hosts away from Redis over a link with 20 ms added round trip and 5 %
    packet loss each way: TCP retransmits (200 ms and more), replies come late, and still
    every task runs once."""
    reason = namespaces_work() or (None if shutil.which("iptables") else "no iptables")
    if reason is not None:
        pytest.skip(reason)
    for name in ("CHAOS_LEDGER", "CHAOS_QUEUE"):  # the bench sets them; restored after
        monkeypatch.setenv(name, "")
    load_benchmark("hosts")  # hosts_bench imports it
    bench = load_benchmark("hosts_bench")
    with bench.path_fleet(tmp_path, hosts=2, replicas=2) as (fleet, link):
        link.set(rtt=20, loss=5)
        assert fleet.drive("rtt")["ms"] >= 20  # the path is as slow as it is meant to be
        ids = fleet.drive("batch", "60")["ids"]
        fleet.published += ids
        wait_until(lambda: fleet.ended() >= set(ids), 60, "every task to end")
        report = fleet.report()
    assert report.lost == 0 and report.run_twice == 0, report
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"soloist-{os.getpid()}-" not in leftover
