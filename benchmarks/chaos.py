"""Chaos run: prove that nothing is lost while workers are killed and the broker restarts.

    python benchmarks/chaos.py [--broker sqlite|redis|amqp|all] [--tasks N] [--replicas 3]
                               [--kill-every 2.0] [--timeout 300] [--faults]
                               [--settle-batch N]
                               [--hostile POOLS]

Tasks sleeping 0-20 ms are published (half before the workers start, half while they
run), solo worker processes consume them, a random worker is SIGKILLed every
`--kill-every` seconds and replaced, and in the middle the broker restarts: a private
Redis with `appendfsync always` is SIGKILLed and started again, a private RabbitMQ node's
app is stopped and started (never the machine's own RabbitMQ), and for
SQLite every worker is killed at once. Every task appends start and
end lines to a ledger; the oracle checks it against what was published:

* lost: published (publish returned) but never finished. Must be 0.
* run twice: started more than once. Each must be explained by the ledger: an earlier
  attempt was on a worker that was killed, or overlapped the broker restart.
  "by kills" counts the runs started again after the worker running them was killed,
  "per kill" divides them by the kills: at most 1 when each task is settled as it ends
  (the task running);
  "had ended" counts those that ran to their end before the kill (settled too late; the
  broker restart can leave some too, whatever the worker did).

Exits 1 if anything is lost or a second run is unexplained.

`--faults` runs the environment's faults instead of the broker restart (see `run_faults`):
the store refuses writes for a while, the workers' wall clocks step by +120 s and
-3,600 s, and two operators requeue dead letters at once, while workers are killed.

With `--hostile solo,threads,processes` it runs `run_hostile` instead, per broker and pool:
a `--replicas 2` fleet runs `work` mixed with tasks that reach past their task (they call
sys.exit and os._exit(0), fork and return in the child, leave a SIGALRM timer armed, ignore
SIGTERM, kill idle task threads); nothing may be lost, stall or run in a forked child.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # loaded by path from tests too
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rabbit_node import Node, cookie  # noqa: E402

from tests.support.redis_support import RedisServer  # noqa: E402

if TYPE_CHECKING:
    from soloist import App


@dataclass
class Report:
    broker: str
    tasks: int
    kills: int = 0
    restarts: int = 0
    lost: int = 0
    run_twice: int = 0
    #: Earlier runs on a worker that was then killed: what a kill made run again.
    reruns_by_kill: int = 0
    #: Of those, runs that had ended (their settle not done when the kill came).
    reruns_after_end: int = 0
    unexplained: int = 0
    seconds: float = 0.0
    #: `run_faults`: stored results not SUCCESS after the run (a rerun's result erased).
    wrong_results: int = 0
    notes: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return self.lost == 0 and self.unexplained == 0 and self.wrong_results == 0


class BrokerUnderTest:
    """Where the run's messages live, and how that broker is restarted."""

    def __init__(self, kind: str, tmp: Path, private: bool = False) -> None:
        """`private`: RabbitMQ is a node of the run's own, which `restart` may restart;
        else the machine's, where the run only declares and deletes queues of its own."""
        self.kind = kind
        self.tmp = tmp
        self.redis: RedisServer | None = None
        self.rabbit: Node | None = None
        if kind == "sqlite":
            self.url = f"sqlite:///{tmp}/chaos.db"
        elif kind == "redis":
            if shutil.which("redis-server") is None:
                raise SystemExit("redis-server is not installed")
            self.redis = RedisServer(tmp)  # appendfsync always: an ack survives the kill
            self.redis.start()
            self.port = self.redis.port
            self.url = f"{self.redis.url}?reconnect_timeout=60"
        elif kind == "amqp" and private:
            cookie(tmp)
            self.rabbit = Node(tmp, "chaos")
            self.rabbit.start()
            self.rabbit.wait()
            self.url = f"{self.rabbit.url}?heartbeat=5"
        elif kind == "amqp":
            self.url = "amqp://guest:guest@127.0.0.1:5672/?heartbeat=5"
        else:
            raise SystemExit(f"unknown broker {kind!r}")

    def restart(self, workers: Workers) -> tuple[float, float]:
        """Restart the broker; returns the (start, end) unix times of the outage."""
        begin = time.time()
        if self.kind == "redis":
            assert self.redis is not None
            self.redis.stop(signal.SIGKILL)
            time.sleep(0.5)
            self.redis.start()
        elif self.kind == "amqp":
            assert self.rabbit is not None, "only a private node is restarted"
            self.rabbit.ctl("stop_app")
            time.sleep(0.5)
            self.rabbit.ctl("start_app")
        else:
            workers.kill_all()  # a machine crash, as far as SQLite can tell
            time.sleep(0.5)
            workers.fill()
        return begin, time.time()

    def close(self, queue: str) -> None:
        """Stop a private server; on RabbitMQ, delete the run's queues (quorum queues hold
        file handles on the shared server)."""
        if self.redis is not None:
            self.redis.stop(signal.SIGKILL)
        if self.rabbit is not None:
            self.rabbit.halt()
        elif self.kind == "amqp":
            from soloist.brokers.amqp import AMQPBroker

            admin = AMQPBroker(self.url)
            try:
                admin.delete(queue)
            finally:
                admin.close()


class Workers:
    """Solo worker processes, replaced when killed."""

    def __init__(
        self,
        env: dict[str, str],
        replicas: int,
        queue: str,
        log: Path,
        app: str = "chaos_app:app",
        lease: float = 2.0,
        settle_batch: int | None = None,
    ) -> None:
        self.env = env
        self.lease = lease
        self.settle_batch = settle_batch
        self.app = app
        self.replicas = replicas
        self.queue = queue
        self.log = log.open("a")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()
        #: When each was killed (unix time), to tell how long before a rerun's kill it ended.
        self.kill_times: dict[int, float] = {}

    def fill(self) -> None:
        self.procs = [p for p in self.procs if p.poll() is None]
        while len(self.procs) < self.replicas:
            cmd = [
                sys.executable,
                "-m",
                "soloist",
                "worker",
                "-A",
                self.app,
                "-Q",
                self.queue,
                "--lease",
                str(self.lease),
                *(["--settle-batch", str(self.settle_batch)] if self.settle_batch else []),
                "--loglevel",
                "warning",
            ]
            self.procs.append(
                subprocess.Popen(
                    cmd, env=self.env, cwd=HERE, stdout=self.log, stderr=subprocess.STDOUT
                )
            )

    def kill_one(self, rng: random.Random) -> None:
        alive = [p for p in self.procs if p.poll() is None]
        if alive:
            victim = rng.choice(alive)
            self.killed.add(victim.pid)
            self.kill_times[victim.pid] = time.time()
            victim.kill()
            victim.wait()
        self.fill()

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.killed.add(proc.pid)
                self.kill_times[proc.pid] = time.time()
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.log.close()


def _use_chaos_app(url: str, ledger: Path, queue: str) -> dict[str, str]:
    """The environment of workers running chaos_app on broker `url` (results in memory),
    and chaos_app made importable here with the same ledger and queue."""
    env = {
        **os.environ,
        "SOLOIST_BROKER_URL": url,
        "SOLOIST_RESULT_URL": "memory://",
        "CHAOS_LEDGER": str(ledger),
        "CHAOS_QUEUE": queue,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
    }
    os.environ.update({k: env[k] for k in ("CHAOS_LEDGER", "CHAOS_QUEUE")})
    sys.path.insert(0, str(HERE))
    return env


def run(
    kind: str,
    tasks: int,
    replicas: int = 3,
    kill_every: float = 2.0,
    timeout: float = 300.0,
    seed: int = 1,
    settle_batch: int | None = None,
) -> Report:
    """The restart run; on RabbitMQ, the broker restarted is a node of the run's own."""
    rng = random.Random(seed)
    report = Report(kind, tasks)
    with tempfile.TemporaryDirectory(prefix=f"chaos-{kind}-") as tmp_name:
        tmp = Path(tmp_name)
        broker = BrokerUnderTest(kind, tmp, private=True)
        queue = f"chaos-{uuid.uuid4().hex[:8]}"
        ledger = tmp / "ledger.txt"
        env = _use_chaos_app(broker.url, ledger, queue)
        from chaos_app import app, work

        app.configure(broker.url, "memory://")
        app.default_queue = queue
        published: list[str] = []
        lock = threading.Lock()

        def publish(count: int) -> None:
            for _ in range(count):
                while True:
                    try:
                        result = work.apply_async((rng.randint(0, 20),), queue=queue)
                        break
                    except Exception as exc:  # broker restarting: try again, as a producer would
                        report.notes.append(f"publish retried: {type(exc).__name__}")
                        time.sleep(0.2)
                with lock:
                    published.append(result.id)

        first = tasks // 2
        publish(first)
        workers = Workers(env, replicas, queue, tmp / "workers.log", settle_batch=settle_batch)
        start = time.monotonic()
        workers.fill()
        producer = threading.Thread(target=publish, args=(tasks - first,))
        producer.start()
        outage = (0.0, 0.0)
        restarted = False
        next_kill = time.monotonic() + kill_every
        while time.monotonic() - start < timeout:
            ended = _ended(ledger)
            with lock:
                done = len(published) == tasks and ended >= set(published)
            if done:
                break
            if not restarted and len(ended) >= tasks // 2:
                outage = broker.restart(workers)
                report.restarts += 1
                restarted = True
            if time.monotonic() >= next_kill:
                workers.kill_one(rng)
                next_kill = time.monotonic() + kill_every
            time.sleep(0.1)
        producer.join()
        report.seconds = time.monotonic() - start
        workers.stop()
        report.kills = len(workers.killed)
        _judge(report, published, ledger, workers.killed, outage, workers.kill_times)
        app.close()
        broker.close(queue)
    return report


def run_faults(
    kind: str,
    tasks: int,
    replicas: int = 3,
    kill_every: float = 1.0,
    timeout: float = 120.0,
    seed: int = 1,
) -> Report:
    """The environment's faults, while a random worker is killed every `kill_every` s:

    * the store refuses writes for 1.5 s, twice: a private Redis is put past its
      maxmemory (noeviction); SQLite is held under an exclusive lock past the workers'
      busy timeout (0.5 s). Workers must hold their leases and carry on;
    * the workers' wall clocks step (+120 s, -3,600 s, back), through tests/support/clock_step.py:
      no lease or delay may move;
    * half the tasks fail their first run and are dead-lettered; two operators requeue
      the dead letters at once (App.requeue_dead), over and over: each letter must run
      once more, and every one of those tasks must end with SUCCESS stored.

    Judged as `run` (nothing lost, every second start explained by a kill), plus the
    stored results. Not for RabbitMQ: the shared server must not be made to refuse writes.
    """
    from tests.support.clock_step import install, step

    if kind == "amqp":
        raise SystemExit("run_faults needs a store of its own: sqlite or redis")
    rng = random.Random(seed)
    report = Report(kind, tasks)
    with tempfile.TemporaryDirectory(prefix=f"faults-{kind}-") as tmp_name:
        tmp = Path(tmp_name)
        broker = BrokerUnderTest(kind, tmp)
        url = broker.url + ("?busy_timeout=0.5" if kind == "sqlite" else "")
        queue = f"faults-{uuid.uuid4().hex[:8]}"
        ledger = tmp / "ledger.txt"
        (tmp / "site").mkdir()
        install(tmp / "site")
        clock = tmp / "clock-step"
        step(clock, 0)
        env = {
            **os.environ,
            "SOLOIST_BROKER_URL": url,
            "SOLOIST_RESULT_URL": url,
            "CHAOS_LEDGER": str(ledger),
            "CHAOS_QUEUE": queue,
            "SOLOIST_TEST_CLOCK_STEP": str(clock),
            "PYTHONPATH": os.pathsep.join([str(tmp / "site"), str(HERE), str(ROOT)]),
        }
        os.environ.update({k: env[k] for k in ("CHAOS_LEDGER", "CHAOS_QUEUE")})
        sys.path.insert(0, str(HERE))
        from chaos_app import app, flaky, work

        app.configure(url, url)
        app.default_queue = queue
        published: list[str] = []
        flaky_ids: list[str] = []
        for n in range(tasks):
            task = flaky if n % 2 else work
            while True:
                try:
                    result = task.apply_async((rng.randint(0, 20),), queue=queue)
                    break
                except Exception as exc:
                    report.notes.append(f"publish retried: {type(exc).__name__}")
                    time.sleep(0.2)
            published.append(result.id)
            if task is flaky:
                flaky_ids.append(result.id)
        # SQLite refuses writes by a lock, which stops lease renewals too: the lease must
        # outlast it (Redis renews leases at maxmemory).
        workers = Workers(env, replicas, queue, tmp / "workers.log", lease=5.0)
        stop = threading.Event()
        operators = [
            threading.Thread(target=_operate, args=(url, queue, stop, report)) for _ in range(2)
        ]
        start = time.monotonic()
        workers.fill()
        for operator in operators:
            operator.start()
        refusals = [start + 1.0, start + 5.0]
        steps = [(start + 0.5 + 1.5 * i, s) for i, s in enumerate([120, -3600, 120, 0, -3600, 0])]
        next_kill = start + kill_every
        try:
            while time.monotonic() - start < timeout:
                now = time.monotonic()
                if _ended(ledger) >= set(published) and not steps and not refusals:
                    break
                if refusals and now >= refusals[0]:
                    refusals.pop(0)
                    _refuse_writes(kind, broker, seconds=1.5)
                    report.restarts += 1
                if steps and now >= steps[0][0]:
                    step(clock, steps.pop(0)[1])
                if now >= next_kill:
                    workers.kill_one(rng)
                    next_kill = now + kill_every
                time.sleep(0.05)
        finally:
            stop.set()
            for operator in operators:
                operator.join()
            step(clock, 0)
        report.seconds = time.monotonic() - start
        late = _await_results(app, flaky_ids, until=time.monotonic() + 6 * workers.lease)
        if late:
            report.notes.append(f"{late} results not stored yet when every task had ended")
        workers.stop()
        report.kills = len(workers.killed)
        _judge(report, published, ledger, workers.killed, (0.0, 0.0))
        for task_id in flaky_ids:
            stored = app.results.get(task_id)
            if stored is None or stored[0] != "SUCCESS":
                report.wrong_results += 1
                state = stored[0] if stored else "nothing stored"
                report.notes.append(f"{task_id}: {state} after its rerun")
        app.close()
        broker.close(queue)
    return report


def _await_results(app: App, task_ids: list[str], until: float) -> int:
    """Wait (until `until`, monotonic) for a result stored for each of `task_ids`; returns
    how many had none at first.

    A task writes its `end` to the ledger before its worker stores the result, so the run
    stops with results not yet stored: a worker killed in between, or holding the result
    while the store refuses writes, leaves the message leased to a dead worker, and it runs
    again (and stores its result) only once that lease lapses. What is promised is that
    result eventually, so the workers (no longer killed) are given a few leases' time.
    """
    missing = [i for i in task_ids if app.results.get(i) is None]
    late = len(missing)
    while missing and time.monotonic() < until:
        time.sleep(0.1)
        missing = [i for i in missing if app.results.get(i) is None]
    return late


def _operate(url: str, queue: str, stop: threading.Event, report: Report) -> None:
    """An operator requeueing every dead letter of `queue`, again and again."""
    from soloist import App
    from soloist.errors import BrokerUnavailable

    operator = App(url, url)
    try:
        while not stop.is_set():
            try:
                operator.requeue_dead(queue)
            except BrokerUnavailable as exc:  # the store refusing writes: try again
                report.notes.append(f"requeue retried: {str(exc)[:60]}")
            stop.wait(0.2)
    finally:
        operator.close()


def _refuse_writes(kind: str, broker: BrokerUnderTest, seconds: float) -> None:
    """Have the store refuse writes for `seconds` (in the background)."""
    if kind == "redis":
        import redis

        client = redis.Redis(port=broker.port)
        client.config_set("maxmemory", 1)  # past it, with noeviction: writes refused

        def restore() -> None:
            time.sleep(seconds)
            client.config_set("maxmemory", 0)
            client.close()

        threading.Thread(target=restore, daemon=True).start()
        return
    import sqlite3

    path = broker.url.removeprefix("sqlite:///")
    locked = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
        conn.close()

    threading.Thread(target=hold, daemon=True).start()
    locked.wait(30)


def _ended(ledger: Path) -> set[str]:
    if not ledger.exists():
        return set()
    return {line.split()[1] for line in ledger.read_text().splitlines() if line.startswith("end ")}


def _judge(
    report: Report,
    published: list[str],
    ledger: Path,
    killed: set[int],
    outage: tuple[float, float],
    kill_times: dict[int, float] | None = None,
) -> None:
    starts: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)
    ends: dict[str, list[int]] = collections.defaultdict(list)
    ended_at: dict[tuple[str, int], float] = {}
    for line in ledger.read_text().splitlines() if ledger.exists() else []:
        parts = line.split()
        if parts[0] == "start":
            starts[parts[1]].append((int(parts[3]), float(parts[4])))
        elif parts[0] == "end":
            ends[parts[1]].append(int(parts[2]))
            ended_at[(parts[1], int(parts[2]))] = float(parts[3])
    report.lost = sum(1 for task_id in published if not ends.get(task_id))
    for task_id, attempts in starts.items():
        if len(attempts) < 2:
            continue
        report.run_twice += 1
        # Run again because its worker was killed: the next attempt started after that kill
        # (one that started before it came from something else, e.g. the broker restart).
        ordered = sorted(attempts, key=lambda attempt: attempt[1])
        for (pid, _), (_, next_start) in itertools.pairwise(ordered):
            if pid not in killed or next_start < (kill_times or {}).get(pid, next_start):
                continue
            report.reruns_by_kill += 1
            if pid in ends[task_id]:
                report.reruns_after_end += 1
                end = ended_at[(task_id, pid)]
                before = (kill_times or {}).get(pid, end) - end
                during = " in the restart" if outage[0] - 1 <= end <= outage[1] + 1 else ""
                report.notes.append(f"{task_id} ended {before:.3f}s before its kill{during}")
        for pid, started in attempts[:-1]:
            by_kill = pid in killed
            by_outage = outage[0] - 30 <= started <= outage[1] + 5
            if not (by_kill or by_outage):
                report.unexplained += 1
                report.notes.append(f"{task_id} ran again after pid {pid} at {started:.3f}")
                break


@dataclass
class HostileReport:
    """`run_hostile`: what the fleet did with tasks that reach past their task."""

    broker: str
    pool: str
    tasks: int
    hostile: int = 0
    lost: int = 0  # expected to end, never did
    wrongly_dead: int = 0  # dead-lettered, though expected to end
    missing_dead: int = 0  # sys_exit tasks not dead-lettered (their failure)
    child_ran: int = 0  # tasks started by a forked child that went on as a worker
    unexplained: int = 0  # run twice, the earlier run not on a process that exited
    stalled: bool = False  # the fleet did not stop warm on SIGTERM
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not (
            self.lost
            or self.wrongly_dead
            or self.missing_dead
            or self.child_ran
            or self.unexplained
            or self.stalled
        )


def run_hostile(
    kind: str,
    pool: str,
    tasks: int = 200,
    each: int = 3,
    timeout: float = 120.0,
    seed: int = 1,
) -> HostileReport:
    """A `--replicas 2` fleet runs `work` tasks mixed with `each` of every hostile task of
    chaos_app (they exit, os._exit, fork, leave timers armed, take SIGTERM, kill task
    threads); then the fleet is stopped with SIGTERM. Nothing may be lost or stall."""
    rng = random.Random(seed)
    report = HostileReport(kind, pool, tasks)
    with tempfile.TemporaryDirectory(prefix=f"chaos-hostile-{kind}-") as tmp_name:
        tmp = Path(tmp_name)
        broker = BrokerUnderTest(kind, tmp)
        queue = f"chaos-{uuid.uuid4().hex[:8]}"
        ledger = tmp / "ledger.txt"
        env = _use_chaos_app(broker.url, ledger, queue)
        from chaos_app import HOSTILE, HOSTILE_THREADS, app, sys_exit, work

        from soloist.message import Message

        app.configure(broker.url, "memory://")
        hostile = [
            t for t in (HOSTILE_THREADS if pool == "threads" else HOSTILE) for _ in range(each)
        ]
        calls = hostile + [work] * max(tasks - len(hostile), 0)
        rng.shuffle(calls)
        report.tasks, report.hostile = len(calls), len(hostile)
        ids: dict[str, str] = {}  # task id -> task name
        for task in calls:
            args = (rng.randint(0, 20),) if task is work else ()
            ids[task.apply_async(args, queue=queue).id] = task.name
        expect_dead = {i for i, name in ids.items() if name == sys_exit.name}
        concurrency = [] if pool == "solo" else ["-c", "2"]
        cmd = [sys.executable, "-m", "soloist", "worker", "-A", "chaos_app:app", "-Q", queue]
        cmd += ["--replicas", "2", "--pool", pool, *concurrency, "--lease", "2"]
        with (tmp / "fleet.log").open("w") as log:
            fleet = subprocess.Popen(cmd, env=env, cwd=HERE, stdout=log, stderr=subprocess.STDOUT)
        start = time.monotonic()
        dead: set[str] = set()
        while time.monotonic() - start < timeout:
            ended = _ended(ledger)
            dead = {
                Message.decode(d.body, app.codec).id
                for d in app.broker.dead_letters(queue, limit=len(ids))
            }
            if ended | dead >= set(ids):
                break
            time.sleep(0.2)
        report.seconds = time.monotonic() - start
        fleet.send_signal(signal.SIGTERM)
        try:
            report.stalled = fleet.wait(timeout=30) != 0
        except subprocess.TimeoutExpired:
            report.stalled = True
            fleet.kill()
            fleet.wait()
        if report.stalled:
            report.notes.append("the fleet did not stop warm on SIGTERM")
        _judge_hostile(report, ids, expect_dead, dead, ledger)
        if not report.ok():
            report.notes.append((tmp / "fleet.log").read_text()[-3000:])
        app.close()
        broker.close(queue)
    return report


def _judge_hostile(
    report: HostileReport, ids: dict[str, str], expect_dead: set[str], dead: set[str], ledger: Path
) -> None:
    lines = [line.split() for line in ledger.read_text().splitlines()] if ledger.exists() else []
    ended = {p[1] for p in lines if p[0] == "end"}
    exited = {int(p[2]) for p in lines if p[0] == "exit"}
    children = {int(p[2]) for p in lines if p[0] == "child"}
    starts: dict[str, list[int]] = collections.defaultdict(list)
    for p in lines:
        if p[0] == "start":
            starts[p[1]].append(int(p[3]))
    for task_id, name in ids.items():
        if task_id in expect_dead:
            if task_id not in dead:
                report.missing_dead += 1
                report.notes.append(f"{name} {task_id} not dead-lettered")
        elif task_id in dead:
            report.wrongly_dead += 1
            report.notes.append(f"{name} {task_id} dead-lettered")
        elif task_id not in ended:
            report.lost += 1
            report.notes.append(f"{name} {task_id} never ended")
    for task_id, pids in starts.items():
        report.child_ran += sum(pid in children for pid in pids)
        if any(pid not in exited for pid in pids[:-1]):
            report.unexplained += 1
            report.notes.append(f"{ids.get(task_id)} {task_id} ran again: pids {pids}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="all", help="sqlite, redis, amqp or all")
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--settle-batch",
        type=int,
        help="the workers' --settle-batch (default: theirs); the chaos run only",
    )
    parser.add_argument(
        "--faults",
        action="store_true",
        help="store refusing writes, clock steps and concurrent operators (sqlite, redis)",
    )
    parser.add_argument(
        "--hostile",
        metavar="POOLS",
        help="instead: run hostile tasks (exits, forks, signals, thread kills) on a "
        "--replicas fleet of each pool given (solo,threads,processes)",
    )
    args = parser.parse_args()
    every = ["sqlite", "redis"] if args.faults else ["sqlite", "redis", "amqp"]
    kinds = every if args.broker == "all" else args.broker.split(",")
    if args.hostile:
        return _main_hostile(kinds, args.hostile.split(","), args.tasks, args.timeout)
    print(
        f"{'broker':<8}{'tasks':>7}{'kills':>7}{'restarts':>10}{'lost':>6}"
        f"{'run twice':>11}{'by kills':>10}{'per kill':>10}{'had ended':>11}{'unexplained':>13}"
        f"{'seconds':>9}"
    )
    failed = False
    for kind in kinds:
        if args.faults:
            r = run_faults(kind, args.tasks, args.replicas, args.kill_every, args.timeout)
        else:
            r = run(
                kind,
                args.tasks,
                args.replicas,
                args.kill_every,
                args.timeout,
                settle_batch=args.settle_batch,
            )
        print(
            f"{r.broker:<8}{r.tasks:>7}{r.kills:>7}{r.restarts:>10}{r.lost:>6}"
            f"{r.run_twice:>11}{r.reruns_by_kill:>10}{r.reruns_by_kill / max(r.kills, 1):>10.2f}"
            f"{r.reruns_after_end:>11}{r.unexplained:>13}{r.seconds:>9.1f}"
            + (f"  wrong results: {r.wrong_results}" if args.faults else "")
        )
        for note in sorted(set(r.notes))[:10]:
            print(f"    {note}")
        failed = failed or not r.ok()
    return 1 if failed else 0


def _main_hostile(kinds: list[str], pools: list[str], tasks: int, timeout: float) -> int:
    print(
        f"{'broker':<8}{'pool':<11}{'tasks':>6}{'hostile':>8}{'lost':>6}{'wrong dead':>11}"
        f"{'missing dead':>13}{'child ran':>10}{'unexplained':>12}{'stalled':>8}{'seconds':>9}"
    )
    failed = False
    for kind in kinds:
        for pool in pools:
            r = run_hostile(kind, pool, tasks, timeout=timeout)
            print(
                f"{r.broker:<8}{r.pool:<11}{r.tasks:>6}{r.hostile:>8}{r.lost:>6}"
                f"{r.wrongly_dead:>11}{r.missing_dead:>13}{r.child_ran:>10}{r.unexplained:>12}"
                f"{'yes' if r.stalled else 'no':>8}{r.seconds:>9.1f}"
            )
            for note in r.notes[:10]:
                print(f"    {note}")
            failed = failed or not r.ok()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
