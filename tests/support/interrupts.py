"""The contract of `Broker.interrupt`, checked on each broker that is interruptible."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from soloist.brokers.base import Broker, Delivery
from tests.support.waiting import wait_until


def assert_interrupt_ends_a_wait(
    broker: Broker, queue: str, waiting: Callable[[threading.Thread], bool]
) -> None:
    """`interrupt` ends the fetch waiting now, or else the next one, and only that one; the
    broker fetches as before afterwards. `waiting(thread)`: whether the fetch in `thread`
    is blocked in the broker's idle wait."""
    assert broker.interruptible
    ended: list[tuple[list[Delivery], float]] = []

    def wait() -> None:
        got = broker.fetch([queue], 10, 30, 30.0)
        ended.append((got, time.monotonic()))

    fetcher = threading.Thread(target=wait)
    fetcher.start()
    wait_until(lambda: waiting(fetcher), 10, "the fetch blocked in its wait")
    t0 = time.monotonic()
    broker.interrupt()
    fetcher.join(10)
    assert ended and ended[0][0] == [] and ended[0][1] - t0 < 1.0
    broker.interrupt()  # no wait under way: the next one returns at once, and only it
    t0 = time.monotonic()
    assert broker.fetch([queue], 10, 30, timeout=5.0) == []
    assert time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    assert broker.fetch([queue], 10, 30, timeout=0.5) == []
    assert time.monotonic() - t0 >= 0.4
    broker.publish(queue, b"after")
    assert [d.body for d in broker.fetch([queue], 10, 30, timeout=3.0)] == [b"after"]
