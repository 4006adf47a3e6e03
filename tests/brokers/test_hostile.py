"""Hostile input through every broker's decode path: garbage never stops a worker.

Hypothesis builds batches of arbitrary bytes and of valid messages with bytes mutated;
each batch goes through a real broker to an in-process worker. Every message must end
exactly once: run (if it still decodes to a valid call) or dead-lettered with a reason.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soloist import App
from soloist.brokers.base import Broker
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


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=bodies)
def test_garbage_and_mutations_are_run_or_dead_lettered_once(
    make_broker: Callable[..., Broker], queue: str, batch: list[bytes]
) -> None:
    run_batch(make_broker(), queue, batch)


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
