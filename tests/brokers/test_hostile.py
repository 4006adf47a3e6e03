"""Hostile input through every broker's decode path: garbage never stops a worker.

Hypothesis builds batches of arbitrary bytes and of valid messages with bytes mutated and
runs its many examples on the memory broker, where a batch costs milliseconds; one fixed
hostile batch (seeded, so the same every run) then goes through each real broker, whose
own decode path is what that tests. Every message must end exactly once: run (if it still
decodes to a valid call) or dead-lettered with a reason.
"""

from __future__ import annotations

import os
import pickle
import random
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soloist import App
from soloist.brokers.base import Broker
from soloist.brokers.memory import MemoryBroker
from soloist.message import Message
from soloist.serializers import Codec
from soloist.testing import drain

VALID = Message("echo", (1, "two"), {"three": [3]}, id="fixed", sent=1.0).encode(Codec())


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    body = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
    return bytes(body)


bodies = st.lists(st.binary(min_size=0, max_size=120) | mutated(), min_size=50, max_size=50)


def run_batch(broker: Broker, queue: str, batch: list[bytes]) -> None:
    app = App(broker, "memory://", default_queue=queue)
    ran: list[object] = []

    @app.task(name="echo", max_retries=0)
    def echo(*args: object, **kwargs: object) -> None:
        ran.append(args)

    before = len(broker.dead_letters(queue, limit=100_000))
    for body in batch:
        broker.publish(queue, body)
    stats = drain(app, [queue], prefetch=25, watchdog=False)
    dead = broker.dead_letters(queue, limit=100_000)[before:]
    assert stats.done + stats.dead == len(batch), stats
    assert len(ran) == stats.done and len(dead) == stats.dead
    assert all(d.reason for d in dead)
    assert broker.depth(queue) == 0


def fixed_batch(seed: int = 21) -> list[bytes]:
    """50 hostile bodies, the same every run: empty and short ones, random bytes of every
    length, the valid message cut short, and the valid message with bytes changed."""
    rng = random.Random(seed)
    batch = [b"", b"{", b"\x00", VALID[:1], VALID[: len(VALID) // 2], VALID + b"\x00"]
    batch += [rng.randbytes(rng.randint(1, 120)) for _ in range(20)]
    while len(batch) < 50:
        body = bytearray(VALID)
        for _ in range(rng.randint(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        batch.append(bytes(body))
    return batch


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=bodies)
def test_garbage_and_mutations_are_run_or_dead_lettered_once(batch: list[bytes]) -> None:
    broker = MemoryBroker()
    run_batch(broker, "hostile", batch)
    broker.close()


def test_a_fixed_hostile_batch_through_every_broker(
    make_broker: Callable[..., Broker], queue: str
) -> None:
    run_batch(make_broker(), queue, fixed_batch())


def test_a_pickle_payload_is_never_unpickled(
    make_broker: Callable[..., Broker], queue: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    payloads = [b"p" + pickle.dumps(Evil()), pickle.dumps(Evil())]
    run_batch(make_broker(), queue, payloads)
    assert not marker.exists()
