"""Many hosts on one machine: network namespaces on a private bridge, a partition measured.

    python benchmarks/hosts.py [--tasks 8] [--partition 10] [--lease 2]   (as root)

Builds hosts as network namespaces named soloist-<pid>-<host> (a `switch` namespace holds
the bridge; each host has one veth to it, addressed 10.231.<n>.<i>/24 inside the
namespaces only, so no traffic leaves the machine and nothing outside them changes):

* `broker`: a private redis-server (never the shared one);
* `w1`, `w2`: `soloist worker --replicas 2` each, with a short lease;
* `prod`: the producer, and the reader of results at the end.

The partition: once w1's replicas run tasks, w1's port is taken off the bridge (every
packet to or from it vanishes) for longer than the lease; w2 takes w1's tasks when their
leases lapse and runs them; then the link heals and w1's late settles meet the fence.
The kill: every process on w1 is SIGKILLed at once instead. Judged on chaos_app's
ledger (benchmarks/chaos.py's oracle): nothing lost, every second run explained by the
partition; and every stored result is the pid of the run that finished last, never one
of w1's runs from the partition. Everything is removed at the end, on failure too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from chaos import Report, _judge  # noqa: E402


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Net:
    """Hosts as network namespaces on one bridge; `close` removes them all."""

    prefix: str = field(default_factory=lambda: f"soloist-{os.getpid()}-")
    subnet: str = field(default_factory=lambda: f"10.231.{os.getpid() % 250}")
    hosts: dict[str, str] = field(default_factory=dict)  # name -> address
    procs: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    #: Where every process started on a host writes its output (see `start`).
    output: IO[bytes] | None = None

    def ns(self, host: str) -> str:
        return self.prefix + host

    def start(self, log: Path) -> None:
        self.output = log.open("ab")
        _ip("netns", "add", self.ns("switch"))
        self._in("switch", "ip", "link", "add", "br0", "type", "bridge")
        self._in("switch", "ip", "link", "set", "br0", "up")

    def add(self, host: str) -> str:
        index = len(self.hosts) + 1
        ns, address = self.ns(host), f"{self.subnet}.{index}"
        # Created in the switch namespace, so no name ever appears in the machine's own.
        _ip("netns", "add", ns)
        self._in("switch", "ip", "link", "add", f"h{index}", "type", "veth", "peer", "eth0",
                 "netns", ns)  # fmt: skip
        self._in("switch", "ip", "link", "set", f"h{index}", "master", "br0", "up")
        self._in(host, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        self._in(host, "ip", "link", "set", "eth0", "up")
        self._in(host, "ip", "link", "set", "lo", "up")
        self.hosts[host] = address
        return address

    def _in(self, host: str, *cmd: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.ns(host), *cmd], check=True,
                       capture_output=True)  # fmt: skip

    def run(self, host: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(host), *cmd], env=env,
                                cwd=HERE, stdout=self.output, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        self.procs.setdefault(host, []).append(proc)
        return proc

    def pids(self, host: str) -> set[int]:
        """Every process running in the host's namespace."""
        out = subprocess.run(["ip", "netns", "pids", self.ns(host)], capture_output=True,
                             text=True)  # fmt: skip
        return {int(p) for p in out.stdout.split()}

    def partition(self, host: str) -> None:
        """Cut the host's cable at the switch: its packets go nowhere, silently, and none
        reach it (as a dead switch port; `tc netem` is not in every kernel, this is)."""
        self._in("switch", "ip", "link", "set", self._port(host), "nomaster")

    def heal(self, host: str) -> None:
        self._in("switch", "ip", "link", "set", self._port(host), "master", "br0")

    def lose(self, host: str, percent: float) -> None:
        """Drop `percent` % of the packets the host sends and as many of those it receives,
        at random (netfilter's `statistic` match, through iptables; 0 removes the rule).
        TCP sees real loss: retransmissions after its timeout (200 ms at the least)."""
        self._in(host, "iptables", "-F")
        if percent:
            for chain, way in (("INPUT", "-i"), ("OUTPUT", "-o")):
                self._in(host, "iptables", "-A", chain, way, "eth0", "-m", "statistic",
                         "--mode", "random", "--probability", f"{percent / 100:.4f}",
                         "-j", "DROP")  # fmt: skip

    def _port(self, host: str) -> str:
        return f"h{list(self.hosts).index(host) + 1}"

    def kill(self, host: str) -> set[int]:
        """SIGKILL every process on the host at once (a power cut); returns their pids."""
        pids = self.pids(host)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs.get(host, []):
            proc.wait()
        return pids

    def close(self) -> None:
        for host in self.procs:
            self.kill(host)
        for host in [*self.hosts, "switch"]:
            subprocess.run(["ip", "netns", "del", self.ns(host)], capture_output=True)
        if self.output is not None:
            self.output.close()


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _ledger(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def run(scenario: str, tasks: int, outage: float, lease: float, tmp: Path) -> Report:
    """One scenario on a fresh set of hosts: `partition` (w1 cut off for `outage` seconds)
    or `kill` (every process on w1 SIGKILLed at once); see the module doc."""
    report = Report(f"redis, w1 {scenario}", tasks)
    net = Net()
    ledger, log = tmp / "ledger.txt", tmp / "hosts.log"
    try:
        net.start(log)
        broker = net.add("broker")
        for host in ("w1", "w2", "prod"):
            net.add(host)
        url = f"redis://{broker}:6379/0"
        net.run("broker", ["redis-server", "--bind", broker, "--port", "6379", "--save", "",
                           "--appendonly", "no", "--dir", str(tmp),
                           "--protected-mode", "no"], dict(os.environ))  # fmt: skip
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
            "SOLOIST_BROKER_URL": url,
            "SOLOIST_RESULT_URL": url,
            "CHAOS_LEDGER": str(ledger),
            "CHAOS_QUEUE": "hosts",
        }
        ids_file = tmp / "ids.json"
        produce = [sys.executable, __file__, "--produce", str(tasks), "--out", str(ids_file)]
        wait_for(lambda: net.run("prod", [*produce, "--ping"], env).wait() == 0, 20,
                 "the broker host")  # fmt: skip
        if net.run("prod", produce, env).wait() != 0:
            raise RuntimeError(f"the producer failed: see {log}")
        published: list[str] = json.loads(ids_file.read_text())
        worker = [sys.executable, "-m", "soloist", "worker", "-A", "chaos_app:app",
                  "-Q", "hosts", "--lease", str(lease), "--replicas", "2",
                  "--loglevel", "warning"]  # fmt: skip
        for host in ("w1", "w2"):
            net.run(host, worker, env)

        def running_on_w1() -> int:
            w1, ends = net.pids("w1"), set()
            starts = set()
            for parts in _ledger(ledger):
                if parts[0] == "start" and int(parts[3]) in w1:
                    starts.add(parts[1])
                elif parts[0] == "end":
                    ends.add(parts[1])
            return len(starts - ends)

        wait_for(lambda: running_on_w1() >= 1, 60, "a task on w1")
        with contextlib.suppress(RuntimeError):
            wait_for(lambda: running_on_w1() >= 2, 3, "both w1 replicas busy")
        w1_pids = net.pids("w1")
        start = time.time()
        if scenario == "partition":
            net.partition("w1")
            time.sleep(outage)
            net.heal("w1")
        else:
            w1_pids = net.kill("w1")
        ended = time.time()
        wait_for(lambda: {p[1] for p in _ledger(ledger) if p[0] == "end"} >= set(published),
                 60 + tasks, "every task to end")  # fmt: skip
        time.sleep(lease)  # w1's late settles, refused, land now
        check = [sys.executable, __file__, "--results", str(ids_file), "--out", str(tmp / "r.json")]
        if net.run("prod", check, env).wait() != 0:
            raise RuntimeError(f"reading results failed: see {log}")
        stored: dict[str, int | None] = json.loads((tmp / "r.json").read_text())
        killed = w1_pids if scenario == "kill" else set()
        window = (start, ended) if scenario == "partition" else (0.0, 0.0)
        _judge(report, published, ledger, killed, window)
        _check_results(report, published, stored, ledger, w1_pids)
        fenced = [ln for ln in log.read_text().splitlines() if "lease lost" in ln and
                  any(f"[{pid}]" in ln for pid in w1_pids)]  # fmt: skip
        report.notes.append(f"{len(fenced)} late settles from w1 refused by the fence")
        report.seconds = time.time() - start
    finally:
        net.close()
    return report


def _check_results(
    report: Report,
    published: list[str],
    stored: dict[str, int | None],
    ledger: Path,
    w1_pids: set[int],
) -> None:
    """Each stored result must be the pid of the task's last run: a run cut off on w1
    that finished later may not overwrite it."""
    runs: dict[str, list[int]] = {}
    for parts in _ledger(ledger):
        if parts[0] == "start":
            runs.setdefault(parts[1], []).append(int(parts[3]))
    moved = 0
    for task_id in published:
        pids = runs.get(task_id, [])
        if stored.get(task_id) != (pids[-1] if pids else None):
            report.wrong_results += 1
            report.notes.append(f"{task_id}: stored {stored.get(task_id)}, runs by {pids}")
        moved += len(pids) > 1 and pids[0] in w1_pids
    report.notes.append(f"{moved} tasks running on w1 ran again on w2 and kept w2's result")


def _produce(count: int, out: Path, ping: bool) -> int:
    from chaos_app import app, pid  # in the producer host's process, with its environment

    if ping:
        app.broker.depth("hosts")
        return 0
    ids = [pid.apply_async((3000,), queue="hosts").id for _ in range(count)]
    out.write_text(json.dumps(ids))
    return 0


def _results(ids_file: Path, out: Path) -> int:
    from chaos_app import app

    stored = {}
    for task_id in json.loads(ids_file.read_text()):
        stored[task_id] = app.result(task_id).get(timeout=10)
    out.write_text(json.dumps(stored))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--scenario", choices=["partition", "kill", "all"], default="all")
    parser.add_argument("--outage", type=float, default=10.0, help="partition seconds")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--produce", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ping", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce is not None:
        return _produce(args.produce, args.out, args.ping)
    if args.results is not None:
        return _results(args.results, args.out)
    if os.geteuid() != 0:
        print("hosts.py needs root (network namespaces)", file=sys.stderr)
        return 2
    ok = True
    for scenario in ["partition", "kill"] if args.scenario == "all" else [args.scenario]:
        with tempfile.TemporaryDirectory(prefix="soloist-hosts-") as tmp:
            report = run(scenario, args.tasks, args.outage, args.lease, Path(tmp))
        what = f"partition for {args.outage:g} s" if scenario == "partition" else "SIGKILLed"
        print(f"w1 {what}, lease {args.lease:g} s, {args.tasks} tasks: lost {report.lost},"
              f" run twice {report.run_twice}, unexplained {report.unexplained}, wrong"
              f" results {report.wrong_results}, {report.seconds:.1f} s")  # fmt: skip
        for note in report.notes:
            print("  " + note)
        ok = ok and report.ok()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
