"""The ceiling of any Python worker on each broker: the batched floor loop, and the same
loop doing per message only what every worker must do with a task: decode its JSON body
and call the function. The gap between the two is CPython's, not a task queue's.

    python benchmarks/ceiling.py [-n 20000]

Each figure is the best of three, interleaved. Soloist's no-op worker rate
(benchmarks/suite.py) can be read against the second one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from floors import AMQPFloor, RedisFloor, SQLiteFloor
from suite import AMQP_URL, REDIS_URL, Floor, reachable

_decode = json.JSONDecoder().raw_decode


def noop() -> None:
    pass


def decode_and_call(body: bytes) -> None:
    _decode(body.decode(), 1)  # past the serializer's tag byte, as soloist.serializers
    noop()


def amqp_floor() -> AMQPFloor:
    from soloist.brokers.amqp import AMQPBroker

    queue, probe = f"ceiling-{uuid.uuid4().hex[:8]}", AMQPBroker(AMQP_URL)
    try:  # on a queue declared as the broker declares its own
        return AMQPFloor(AMQP_URL, queue, probe.topology.work_args(queue))
    finally:
        probe.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="messages per figure")
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        floors: list[tuple[str, Callable[[], Floor]]] = [
            ("sqlite", lambda: SQLiteFloor(str(Path(tmp) / "floor.db")))
        ]
        if reachable(6379):
            floors.append(("redis", lambda: RedisFloor(REDIS_URL, f"ceiling-{uuid.uuid4().hex}:")))
        if reachable(5672):
            floors.append(("amqp", amqp_floor))
        print(f"{'broker':8}{'batched floor':>15}{'+ decode + call':>17}{'ratio':>7}  (msg/s)")
        for name, make in floors:
            floor = make()
            bare = python = 0.0
            try:
                for _ in range(3):  # interleaved, best of each: the machine is noisy
                    bare = max(bare, floor.consume_batched(n))
                    python = max(python, floor.consume_batched(n, decode_and_call))
            finally:
                floor.close()
            print(f"{name:8}{bare:15.0f}{python:17.0f}{python / bare:7.2f}")


if __name__ == "__main__":
    main()
