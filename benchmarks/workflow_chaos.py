"""Workflow chaos run: chords and chains finish, exactly once, while workers are killed.

    python benchmarks/workflow_chaos.py [--broker sqlite|redis|amqp|all] [--chords 300]
                                        [--chains 300] [--nested 100] [--replicas 3]
                                        [--kill-every 1.0]

Chords of 10 members (`wf.member`, then the callback `wf.collect`), chains of 5 steps
(`wf.step`), and nested workflows (a chord of 5 chains of two steps, its callback
`wf.gather`, then one more step) are published, half before the workers start and half
while they run; solo worker processes run them while a random worker is SIGKILLed every
`--kill-every` seconds and replaced. Brokers: SQLite (results in the same file), a
private Redis (results there too), and RabbitMQ with results on a private Redis. Every
task writes start and end lines to a ledger; the oracle checks, against the result store
and the ledger:

* hung: a chord or chain with no final result by the timeout. Must be 0.
* wrong: a chord callback that got other values than its members' (or in another order),
  a chord or chain whose result is not the expected one. Must be 0.
* callback twice: a chord callback that ran to its end more than once, unless a kill
  explains each earlier run. Must be 0.
* unexplained: any task started again where no kill explains the earlier attempt: each
  earlier attempt must have been on a worker that was killed and never acked it (the
  workers log each ack). Must be 0.
* after ack: a call the producer sent that ran again after a run that was acked. Must be
  0 (RabbitMQ gave back prefetched messages as copies, then acked the originals: a worker
  killed in between left both, 13-60 a run, until the two went into one transaction).

Exits 1 if anything is hung, wrong, run again after an ack or unexplained.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from chaos import BrokerUnderTest, Workers  # noqa: E402
from workflow_chaos_app import (  # noqa: E402
    NESTED_MEMBERS,
    app,
    collect,
    gather,
    member,
    step,
)

from soloist import chain, chord  # noqa: E402

STEPS = 5


@dataclass
class Report:
    broker: str
    chords: int
    chains: int
    nested: int = 0
    kills: int = 0
    hung: int = 0
    wrong: int = 0
    callback_twice: int = 0
    run_twice: int = 0
    after_ack: int = 0
    unexplained: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        counts = (self.hung, self.wrong, self.callback_twice, self.after_ack, self.unexplained)
        return not any(counts)


def run(
    kind: str,
    chords: int,
    chains: int,
    nested: int = 0,
    replicas: int = 3,
    kill_every: float = 1.0,
    timeout: float = 300.0,
    seed: int = 1,
    keep: Path | None = None,
) -> Report:
    rng = random.Random(seed)
    report = Report(kind, chords, chains, nested)
    with tempfile.TemporaryDirectory(prefix=f"workflow-chaos-{kind}-") as tmp_name:
        tmp = Path(tmp_name)
        broker = BrokerUnderTest(kind, tmp)
        results_server = None
        if kind == "amqp":  # RabbitMQ keeps no results: they go to a private Redis
            (tmp / "results").mkdir()
            results_server = BrokerUnderTest("redis", tmp / "results")
        results_url = results_server.url if results_server else broker.url
        queue = f"wf-chaos-{uuid.uuid4().hex[:8]}"
        ledger = tmp / "ledger.txt"
        env = {
            **os.environ,
            "SOLOIST_BROKER_URL": broker.url,
            "SOLOIST_RESULT_URL": results_url,
            "CHAOS_LEDGER": str(ledger),
            "CHAOS_QUEUE": queue,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
        }
        app.configure(broker.url, results_url)
        app.default_queue = queue
        sent: list[tuple[str, int, Any]] = []  # (kind, number, handle)
        lock = threading.Lock()

        def publish(numbers: list[int]) -> None:
            for n in numbers:
                if n < chords:
                    members = [member.s(n, i).set(queue=queue) for i in range(10)]
                    flow: Any = chord(members, collect.s(n).set(queue=queue))
                    kind_of = "chord"
                elif n < chords + chains:
                    steps = [step.s(0, n).set(queue=queue)]
                    steps += [step.s(n).set(queue=queue) for _ in range(STEPS - 1)]
                    flow, kind_of = chain(*steps), "chain"
                else:
                    links = [
                        step.s(0, n).set(queue=queue) | step.s(n).set(queue=queue)
                        for _ in range(NESTED_MEMBERS)
                    ]
                    inner = chord(links, gather.s(n).set(queue=queue))
                    flow, kind_of = inner | step.s(n).set(queue=queue), "nested"
                while True:
                    try:
                        handle = flow.apply_async()
                        break
                    except Exception as exc:  # as a producer would: try again
                        report.notes.append(f"publish retried: {type(exc).__name__}")
                        time.sleep(0.2)
                with lock:
                    sent.append((kind_of, n, handle))

        numbers = list(range(chords + chains + nested))
        rng.shuffle(numbers)
        half = len(numbers) // 2
        publish(numbers[:half])
        workers = Workers(env, replicas, queue, tmp / "workers.log", app="workflow_chaos_app:app")
        try:  # interrupted too (a test's timeout): no worker or server is left behind
            try:
                _drive(
                    report, workers, publish, numbers[half:], sent, lock, rng, kill_every, timeout
                )
            finally:
                workers.stop()
            report.kills = len(workers.killed)
            _judge(report, sent, ledger, workers.killed)
            if keep is not None and not report.ok():  # the evidence, before tmp goes
                keep.mkdir(parents=True, exist_ok=True)
                for name in ("ledger.txt", "workers.log"):
                    if (tmp / name).exists():
                        shutil.copy(tmp / name, keep / f"{kind}-{name}")
                killed = "\n".join(map(str, sorted(workers.killed)))
                (keep / f"{kind}-killed.txt").write_text(killed)
        finally:
            app.close()
            broker.close(queue)
            if results_server is not None:
                results_server.close(queue)
    return report


def _drive(
    report: Report,
    workers: Workers,
    publish: Callable[[list[int]], None],
    rest: list[int],
    sent: list[tuple[str, int, Any]],
    lock: threading.Lock,
    rng: random.Random,
    kill_every: float,
    timeout: float,
) -> None:
    """Start the workers, publish `rest` meanwhile, and kill a worker every `kill_every`
    seconds until every workflow has a final result or `timeout` passes."""
    start = time.monotonic()
    workers.fill()
    producer = threading.Thread(target=publish, args=(rest,))
    producer.start()
    waiting: dict[str, Any] = {}
    seen = 0
    next_kill = time.monotonic() + kill_every
    while time.monotonic() - start < timeout:
        with lock:
            for _, _, handle in sent[seen:]:
                waiting[handle.id] = handle
            seen = len(sent)
            published = producer.is_alive() is False
        waiting = {tid: h for tid, h in waiting.items() if not h.ready()}
        if published and seen == len(sent) and not waiting:
            break
        if time.monotonic() >= next_kill:
            workers.kill_one(rng)
            next_kill = time.monotonic() + kill_every
        time.sleep(0.2)
    producer.join()
    report.seconds = time.monotonic() - start


def _judge(
    report: Report, sent: list[tuple[str, int, Any]], ledger: Path, killed: set[int]
) -> None:
    starts: dict[str, list[int]] = collections.defaultdict(list)
    ends: dict[str, list[tuple[int, list[str]]]] = collections.defaultdict(list)
    acked: set[tuple[str, int]] = set()
    for line in ledger.read_text().splitlines() if ledger.exists() else []:
        parts = line.split()
        if parts[0] == "start":
            starts[parts[2]].append(int(parts[3]))
        elif parts[0] == "end":
            ends[parts[2]].append((int(parts[3]), parts[4:]))
        elif parts[0] == "acked":
            acked.add((parts[1], int(parts[2])))

    def explained(task_id: str, pid: int) -> bool:
        return pid in killed and (task_id, pid) not in acked

    # Calls the producer sent (the others were sent by workers, and claim their run).
    first: set[str] = set()
    for kind, _, handle in sent:
        if kind == "chord":
            first.update(handle.group.ids)
        elif kind == "chain":
            first.add(handle.steps[0].id)
        else:
            first.update(step.id for step in handle.steps[: 2 * NESTED_MEMBERS : 2])
    for kind, n, handle in sent:
        if not handle.ready():
            report.hung += 1
            report.notes.append(f"{kind} {n} ({handle.id}) did not finish")
            continue
        expected = {
            "chord": sum(100 * n + i for i in range(10)),
            "chain": STEPS,
            "nested": 2 * NESTED_MEMBERS + 1,
        }[kind]
        try:
            value = handle.get(timeout=1)
        except Exception as exc:
            value = f"{type(exc).__name__}: {exc}"
        if value != expected:
            report.wrong += 1
            report.notes.append(f"{kind} {n}: {value!r}, not {expected}")
        if kind == "chain":
            continue
        callback = handle.id if kind == "chord" else handle.steps[-2].id
        runs = ends.get(callback, [])
        if any(info[-1] != "right" for _, info in runs):
            report.wrong += 1
            report.notes.append(f"{kind} {n}: its callback got the wrong values")
        if len(runs) > 1 and not all(explained(callback, pid) for pid, _ in runs[:-1]):
            report.callback_twice += 1
            report.notes.append(f"{kind} {n}: the callback ran {len(runs)} times")
    for task_id, pids in starts.items():
        if len(pids) < 2:
            continue
        report.run_twice += 1
        # Every attempt but the last must have been cut short by a kill. One that was
        # acked is counted apart: the message came back after its ack (it was given back
        # as a copy too, or published twice).
        if all(explained(task_id, pid) for pid in pids[:-1]):
            continue
        if task_id in first and all(
            explained(task_id, pid) or (task_id, pid) in acked for pid in pids[:-1]
        ):
            report.after_ack += 1
            report.notes.append(f"{task_id} ran again after an acked run, pids {pids}")
        else:
            report.unexplained += 1
            report.notes.append(f"{task_id} started again after pids {pids[:-1]}, not all killed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="all", help="sqlite, redis, amqp or all")
    parser.add_argument("--chords", type=int, default=300)
    parser.add_argument("--chains", type=int, default=300)
    parser.add_argument("--nested", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--keep", type=Path, help="copy the ledger and logs here on failure")
    args = parser.parse_args()
    kinds = ["sqlite", "redis", "amqp"] if args.broker == "all" else args.broker.split(",")
    print(
        f"{'broker':<8}{'chords':>7}{'chains':>7}{'nested':>7}{'kills':>7}{'hung':>6}{'wrong':>7}"
        f"{'cb twice':>10}{'run twice':>11}{'after ack':>11}{'unexplained':>13}{'seconds':>9}"
    )
    failed = False
    for kind in kinds:
        r = run(
            kind,
            args.chords,
            args.chains,
            args.nested,
            args.replicas,
            args.kill_every,
            args.timeout,
            keep=args.keep,
        )
        print(
            f"{r.broker:<8}{r.chords:>7}{r.chains:>7}{r.nested:>7}{r.kills:>7}{r.hung:>6}{r.wrong:>7}"
            f"{r.callback_twice:>10}{r.run_twice:>11}{r.after_ack:>11}{r.unexplained:>13}"
            f"{r.seconds:>9.1f}"
        )
        for note in sorted(set(r.notes))[:10]:
            print(f"    {note}")
        failed = failed or not r.ok()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
