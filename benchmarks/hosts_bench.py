"""Fleets on namespaced hosts: a slow or lossy path to Redis, and how far one broker goes.

    python benchmarks/hosts_bench.py path [--rtts 0,1,5,20] [--losses 0,1,5] [--replicas 4]
    python benchmarks/hosts_bench.py fleet [--workers 10,50,100] [--brokers redis,sqlite]
    python benchmarks/hosts_bench.py fleet --local [...]     (no root: one host, loopback)

As root, on hosts built by benchmarks/hosts.py (network namespaces on a private bridge);
packet loss needs `iptables` (netfilter's statistic match), added latency needs nothing
more: `tc netem` is missing from many kernels, so benchmarks/delay_proxy.py holds the
bytes back instead.

* `path`: a private redis-server on host `broker`, reached only through delay_proxy.py
  on that host (the added round trip is changed between points without restarting
  anything); `--hosts` worker hosts each run `soloist worker --replicas R`; the producer
  is on host `prod`. Loss drops that percentage of the broker host's packets each way.
  Every (rtt, loss) point is measured on the same running fleet.
* `fleet`: N workers spread over `--hosts` worker hosts against one Redis (direct, no
  proxy), and N workers on one host against one SQLite file (SQLite is local by design:
  its producer is on that host too). With `--local` the "hosts" are groups of processes
  on this machine, talking over the loopback (no namespaces, no root): the same
  measurements without the links.

Each point: idle cost (`fleet` only: CPU per idle worker per second of the workers and
of the Redis process, from /proc, and Redis's command time in INFO commandstats), then a
batch of `--tasks` tasks (no-op, or sleeping `--task-ms`) published at once (tasks/s from
the publish to the last end; Redis and worker CPU per task), then tasks published one at
a time for `--seconds` at most at half that rate (one producer thread: over a slow path it
reaches less) for the enqueue-to-start p50 and p99, from chaos_app's ledger. SQLite has
no server: its whole cost is in the workers. At the end the ledger is judged as
benchmarks/chaos.py does: nothing lost, and no task run twice (nothing is killed here).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from chaos import Report, _judge  # noqa: E402
from hosts import Net, wait_for  # noqa: E402
from idle_bench import QUEUE, TOP_LEVEL, chaos_env, startup_timeout  # noqa: E402

from tests.support.redis_support import free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
#: What an idle worker sends; the rest of TOP_LEVEL is what a connection sends once (the
#: statistics reader's own, around an idle measurement).
IDLE_COMMANDS = TOP_LEVEL - {"script|load", "hello", "client|setinfo", "select", "ping"}


def cpu_seconds(pids: set[int]) -> float:
    """User + system CPU of these processes so far (those gone count nothing)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def rss_mb(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(ln.split()[1]) for ln in status.splitlines()
                       if ln.startswith("VmRSS:")), 0)  # fmt: skip
    return total / 1024


def ledger_lines(path: Path) -> list[list[str]]:
    return [ln.split() for ln in path.read_text().splitlines()] if path.exists() else []


class LocalNet:
    """`fleet --local`: Net's interface with every host on this machine, no namespaces
    (and no root); a host is the processes started "on" it and their descendants."""

    def __init__(self) -> None:
        self.hosts: dict[str, str] = {}
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {}
        self.output: IO[bytes] | None = None

    def start(self, log: Path) -> None:
        self.output = log.open("ab")

    def add(self, host: str) -> str:
        self.hosts[host] = "127.0.0.1"
        return "127.0.0.1"

    def run(self, host: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, env=env, cwd=HERE, stdout=self.output,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.procs.setdefault(host, []).append(proc)
        return proc

    def pids(self, host: str) -> set[int]:
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(stat.parent.name))
        found: set[int] = set()
        todo = [p.pid for p in self.procs.get(host, []) if p.poll() is None]
        while todo:
            pid = todo.pop()
            found.add(pid)
            todo += children.get(pid, [])
        return found

    def close(self) -> None:
        for host, procs in self.procs.items():
            for pid in self.pids(host):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for proc in procs:
                proc.wait()
        if self.output is not None:
            self.output.close()


@dataclass
class Fleet:
    """A running fleet: where its producer runs, and the processes whose CPU is counted."""

    net: Net | LocalNet
    env: dict[str, str]
    ledger: Path
    tmp: Path
    producer: str  # the host the producer and statistics reader run on
    workers: int
    broker_pids: set[int]
    worker_pids: set[int]
    redis: bool
    published: list[str]

    def drive(self, *args: str) -> dict[str, Any]:
        """Run `--drive ARGS` on the producer host; its JSON answer."""
        out = self.tmp / "drive.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--drive", *args, "--out", str(out)]
        if self.net.run(self.producer, cmd, self.env).wait() != 0:
            raise RuntimeError(f"--drive {' '.join(args)} failed: see {self.tmp}/hosts.log")
        answer: dict[str, Any] = json.loads(out.read_text())
        return answer

    def reachable(self) -> bool:
        try:
            return bool(self.drive("ping"))
        except RuntimeError:
            return False

    def ended(self) -> set[str]:
        return {p[1] for p in ledger_lines(self.ledger) if p[0] == "end"}

    def idle(self, seconds: float, floor: float) -> str:
        """CPU per idle worker per second: the broker's (Redis: process, less `floor`, its
        CPU per second with no worker; and commands) and the workers' own (all SQLite's
        cost is there)."""
        before = self.drive("stats") if self.redis else {}
        cpu0, w0, t0 = cpu_seconds(self.broker_pids), cpu_seconds(self.worker_pids), time.time()
        time.sleep(seconds)
        cpu1, w1, t1 = cpu_seconds(self.broker_pids), cpu_seconds(self.worker_pids), time.time()
        per = 1e6 / (self.workers * (t1 - t0))
        text = f"idle: worker CPU {(w1 - w0) * per:.0f} us/worker/s"
        if self.redis:
            after = self.drive("stats")
            usec = sum(after["usec"].get(k, 0) - before["usec"].get(k, 0) for k in IDLE_COMMANDS)
            between = 1e6 / (self.workers * (after["t"] - before["t"]))
            used = cpu1 - cpu0 - floor * (t1 - t0)
            text += (f", Redis CPU {used * per:.0f} us/worker/s (process, less"
                     f" {floor * 1e6:.0f} us/s with none),"
                     f" {usec * between / 1e6:.0f} us/worker/s (commandstats)")  # fmt: skip
        return text

    def point(self, tasks: int, seconds: float, max_rate: float = 1e9, ms: int = 0) -> str:
        """A batch (tasks/s, CPU per task, Redis commands per task) then paced tasks
        (enqueue-to-start p50/p99)."""
        before = self.drive("stats") if self.redis else {}
        cpu0, w0 = cpu_seconds(self.broker_pids), cpu_seconds(self.worker_pids)
        batch = self.drive("batch", str(tasks), str(ms))
        ids: list[str] = batch["ids"]
        self.published += ids
        wait_for(lambda: self.ended() >= set(ids), 120 + tasks / 10, "the batch to end")
        cpu1, w1 = cpu_seconds(self.broker_pids), cpu_seconds(self.worker_pids)
        ends = [float(p[3]) for p in ledger_lines(self.ledger) if p[0] == "end" and p[1] in
                set(ids)]  # fmt: skip
        rate = tasks / (max(ends) - batch["t0"])
        redis = ""
        if self.redis:
            after = self.drive("stats")
            calls = {k: after["calls"].get(k, 0) - before["calls"].get(k, 0) for k in TOP_LEVEL}
            waits = (calls["blpop"] + calls["blmove"]) / tasks
            redis = (f"Redis CPU {(cpu1 - cpu0) / tasks * 1e6:4.0f} us/task"
                     f" ({calls['evalsha'] / tasks:.1f} EVALSHA, {waits:.1f} BLPOP/BLMOVE"
                     " a task), ")  # fmt: skip
        paced = self.drive("paced", str(seconds), str(min(rate / 2, max_rate)), str(ms))
        sent: dict[str, float] = paced["sent"]
        self.published += list(sent)
        wait_for(lambda: self.ended() >= set(sent), 120, "the paced tasks to end")
        starts = {p[1]: float(p[4]) for p in ledger_lines(self.ledger) if p[0] == "start"}
        late = sorted(starts[t] - at for t, at in sent.items())
        p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
        return (
            f"{rate:6.0f} tasks/s, {redis}workers {(w1 - w0) / tasks * 1e6:5.0f} us/task;"
            f" paced {len(sent) / seconds:4.0f}/s: p50 {statistics.median(late) * 1000:6.1f} ms,"
            f" p99 {p99 * 1000:6.1f} ms"
        )

    def report(self) -> Report:
        """The ledger judged as benchmarks/chaos.py does, with no kill and no outage."""
        report = Report("hosts", len(self.published))
        _judge(report, self.published, self.ledger, set(), (0.0, 0.0))
        return report

    def judge(self) -> str:
        report = self.report()
        verdict = "ok" if report.ok() and not report.run_twice else "FAILED"
        return (
            f"ledger {verdict}: {len(self.published)} published, lost {report.lost},"
            f" run twice {report.run_twice}, unexplained {report.unexplained}"
        )


def _worker_cmd(replicas: int) -> list[str]:
    return [sys.executable, "-m", "soloist", "worker", "-A", "chaos_app:app", "-Q", QUEUE,
            "--replicas", str(replicas), "--loglevel", "warning"]  # fmt: skip


def _redis(net: Net | LocalNet, tmp: Path, port: int = 6379) -> tuple[str, set[int]]:
    """A private redis-server on host `broker`, on its address and on its loopback."""
    address = net.hosts["broker"]
    binds = list(dict.fromkeys([address, "127.0.0.1"]))
    proc = net.run("broker", ["redis-server", "--bind", *binds, "--port", str(port),
                              "--save", "", "--appendonly", "no", "--dir", str(tmp),
                              "--protected-mode", "no", "--maxclients", "10000"],
                   dict(os.environ))  # fmt: skip
    return address, {proc.pid}  # `ip netns exec` execs: the pid is the server's


def _start(net: Net | LocalNet, hosts: dict[str, int], fleet: Fleet) -> None:
    """`--replicas` workers on each host; wait until all have registered."""
    for host, replicas in hosts.items():
        net.run(host, _worker_cmd(replicas), fleet.env)
    fleet.drive("wait", str(fleet.workers))
    fleet.worker_pids = set().union(*(net.pids(h) for h in hosts))


@dataclass
class Link:
    """The path from every host to the broker: delay_proxy.py's round trip, and loss."""

    net: Net
    rtt_file: Path
    proxy: int  # its pid

    def set(self, rtt: float, loss: float) -> None:
        self.net.lose("broker", loss)
        self.rtt_file.write_text(str(rtt))
        os.kill(self.proxy, signal.SIGHUP)  # read the round trip again


@contextlib.contextmanager
def path_fleet(tmp: Path, hosts: int, replicas: int) -> Iterator[tuple[Fleet, Link]]:
    """A private Redis on host `broker`, reached only through delay_proxy.py on that
    host; `replicas` workers on each of `hosts` hosts; the producer on host `prod`.
    Everything is removed on the way out."""
    net = Net()
    try:
        net.start(tmp / "hosts.log")
        net.add("broker")
        workers = [f"w{i + 1}" for i in range(hosts)]
        for host in [*workers, "prod"]:
            net.add(host)
        address, broker_pids = _redis(net, tmp)
        rtt_file = tmp / "rtt"
        rtt_file.write_text("0")
        proxy = net.run("broker", [sys.executable, str(HERE / "delay_proxy.py"), f"{address}:6380",
                                   "127.0.0.1:6379", "--rtt-file", str(rtt_file)],
                        dict(os.environ))  # fmt: skip
        env = chaos_env(f"redis://{address}:6380/0", tmp / "ledger.txt")
        fleet = Fleet(net, env, tmp / "ledger.txt", tmp, "prod", hosts * replicas, broker_pids,
                      set(), True, [])  # fmt: skip
        wait_for(fleet.reachable, 30, "the broker through the proxy")
        _start(net, dict.fromkeys(workers, replicas), fleet)
        yield fleet, Link(net, rtt_file, proxy.pid)
    finally:
        net.close()


def run_path(args: argparse.Namespace, tmp: Path) -> None:
    with path_fleet(tmp, args.hosts, args.replicas) as (fleet, link):
        print(f"{fleet.workers} workers on {args.hosts} hosts, Redis through delay_proxy.py;"
              f" {args.tasks} tasks of {args.task_ms} ms a batch, paced for {args.seconds:g} s",
              flush=True)  # fmt: skip
        for loss in (float(x) for x in args.losses.split(",")):
            for rtt in (float(x) for x in args.rtts.split(",")):
                link.set(rtt, loss)
                ping = fleet.drive("rtt")["ms"]
                p0 = cpu_seconds({link.proxy})
                figures = fleet.point(args.tasks, args.seconds, 200, args.task_ms)
                proxy_cpu = cpu_seconds({link.proxy}) - p0
                print(f"  +{rtt:4g} ms RTT, {loss:g}% loss: {figures} (PING {ping:.1f} ms;"
                      f" proxy CPU {proxy_cpu:.1f} s)", flush=True)  # fmt: skip
        link.set(0, 0)
        print("  " + fleet.judge())


def run_fleet(args: argparse.Namespace, kind: str, n: int, tmp: Path) -> None:
    net = LocalNet() if args.local else Net()
    ledger = tmp / "ledger.txt"
    try:
        net.start(tmp / "hosts.log")
        if kind == "redis":
            net.add("broker")
            workers = [f"w{i + 1}" for i in range(args.hosts)]
            for host in [*workers, "prod"]:
                net.add(host)
            port = free_port() if args.local else 6379  # not the shared Redis's
            address, broker_pids = _redis(net, tmp, port)
            env, producer = chaos_env(f"redis://{address}:{port}/0", ledger), "prod"
            spread = {h: n // args.hosts + (i < n % args.hosts) for i, h in enumerate(workers)}
        else:
            net.add("w1")
            env, producer = chaos_env(f"sqlite:///{tmp}/fleet.db", ledger), "w1"
            broker_pids, spread = set(), {"w1": n}
        fleet = Fleet(net, env, ledger, tmp, producer, n, broker_pids, set(), kind == "redis", [])
        wait_for(fleet.reachable, 30, "the broker")
        floor = 0.0
        if kind == "redis":
            cpu0, t0 = cpu_seconds(broker_pids), time.time()
            time.sleep(args.idle)
            floor = (cpu_seconds(broker_pids) - cpu0) / (time.time() - t0)
        started = time.monotonic()
        _start(net, spread, fleet)
        where = f"on {len(spread)} hosts" if kind == "redis" else "on one host"
        where += " (--local: one machine, loopback)" if args.local else ""
        print(f"{kind}: {n} workers {where} (up in {time.monotonic() - started:.0f} s,"
              f" {rss_mb(fleet.worker_pids) / n:.0f} MB RSS each)", flush=True)  # fmt: skip
        time.sleep(2)
        print("  " + fleet.idle(args.idle, floor), flush=True)
        print("  " + fleet.point(args.tasks, args.seconds, ms=args.task_ms), flush=True)
        print("  " + fleet.judge(), flush=True)
    finally:
        net.close()


def _drive(args: list[str], out: Path) -> int:
    """Inside a host: talk to the broker as chaos_app (environment set by the caller)."""
    from chaos_app import app, work

    answer: dict[str, object] = {}
    if args[0] == "ping":
        app.broker.ping()
        answer["ok"] = True
    elif args[0] == "rtt":
        times = []
        for _ in range(21):
            t0 = time.perf_counter()
            app.broker.redis.command("PING")  # type: ignore[attr-defined]
            times.append(time.perf_counter() - t0)
        answer["ms"] = statistics.median(times) * 1000
    elif args[0] == "wait":
        n = int(args[1])
        wait_for(lambda: len(app.broker.workers()) >= n, startup_timeout(n), "the workers")
    elif args[0] == "stats":
        text = app.broker.redis.command("INFO", "commandstats").decode()  # type: ignore[attr-defined]
        usec, calls = {}, {}
        for line in text.splitlines():
            if line.startswith("cmdstat_"):
                name, _, rest = line.partition(":")
                fields = dict(part.split("=") for part in rest.split(","))
                usec[name.removeprefix("cmdstat_")] = int(fields["usec"])
                calls[name.removeprefix("cmdstat_")] = int(fields["calls"])
        answer["usec"], answer["calls"], answer["t"] = usec, calls, time.time()
    elif args[0] == "batch":
        answer["t0"] = time.time()
        ms = int(args[2]) if len(args) > 2 else 0
        answer["ids"] = [r.id for r in work.map([ms] * int(args[1]))]
    elif args[0] == "paced":
        seconds, rate = float(args[1]), float(args[2])
        ms = int(args[3]) if len(args) > 3 else 0
        sent: dict[str, float] = {}
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            due = start + len(sent) / rate
            time.sleep(max(0.0, due - time.monotonic()))
            at = time.time()
            sent[work.delay(ms).id] = at
        answer["sent"] = sent
    out.write_text(json.dumps(answer))
    app.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=["path", "fleet"])
    parser.add_argument("--rtts", default="0,1,5,20", help="added round trips, ms (path)")
    parser.add_argument("--losses", default="0,1,5", help="packet loss, percent (path)")
    parser.add_argument("--replicas", type=int, default=4, help="per worker host (path)")
    parser.add_argument("--workers", default="10,50,100", help="fleet sizes (fleet)")
    parser.add_argument("--brokers", default="redis,sqlite", help="(fleet)")
    parser.add_argument("--hosts", type=int, default=4, help="worker hosts")
    parser.add_argument("--tasks", type=int, default=2000, help="a batch")
    parser.add_argument("--seconds", type=float, default=5.0, help="paced publishing")
    parser.add_argument("--task-ms", type=int, default=0, help="each task sleeps this long")
    parser.add_argument("--idle", type=float, default=10.0, help="idle measurement (fleet)")
    parser.add_argument("--local", action="store_true", help="(fleet) no namespaces, no root")
    parser.add_argument("--drive", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        return _drive(args.drive, args.out)
    if args.local and args.what != "fleet":
        parser.error("--local goes with fleet")
    if os.geteuid() != 0 and not args.local:
        print("hosts_bench.py needs root (network namespaces; fleet --local does not)",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.what == "path":
        with tempfile.TemporaryDirectory(prefix="soloist-path-") as tmp:
            run_path(args, Path(tmp))
        return 0
    for kind in args.brokers.split(","):
        for n in (int(x) for x in args.workers.split(",")):
            with tempfile.TemporaryDirectory(prefix="soloist-fleet-") as tmp:
                run_fleet(args, kind, n, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
