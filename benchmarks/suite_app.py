"""The tasks benchmarks/suite.py runs, in its own process and in `soloist worker` ones.

Broker and results come from SOLOIST_BROKER_URL / SOLOIST_RESULT_URL; stamps go to the
file named by SUITE_STAMPS, one fixed-width line each, so the suite counts them by size.
"""

from __future__ import annotations

import os
import time

from soloist import App

#: Bytes per stamp line: "%11.6f\n".
STAMP = 12


def _stamp(value: float) -> None:
    # One short write on an O_APPEND descriptor: lines from several processes never mix.
    fd = os.open(os.environ["SUITE_STAMPS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"%11.6f\n" % value)
    finally:
        os.close(fd)


def make_app(broker: str | None = None, results: str | None = None, queue: str = "default") -> App:
    """An app with the suite's tasks: `noop` (result ignored), `noop_result` (stored),
    `stamp(t0)` (records seconds since the unix time t0), `nap()` (5 ms sleep, then records
    the time it ended modulo 10^5 s), `tick()` (records that time at once), `take(data)`
    (a no-op with an argument, for payloads)."""
    app = App(broker, results, default_queue=queue)

    @app.task(name="suite.noop", ignore_result=True)
    def noop() -> None:
        pass

    @app.task(name="suite.noop_result")
    def noop_result() -> None:
        pass

    @app.task(name="suite.stamp", ignore_result=True)
    def stamp(t0: float) -> None:
        _stamp(time.time() - t0)

    @app.task(name="suite.nap", ignore_result=True)
    def nap() -> None:
        time.sleep(0.005)
        _stamp(time.time() % 1e5)

    @app.task(name="suite.tick", ignore_result=True)
    def tick() -> None:
        _stamp(time.time() % 1e5)

    @app.task(name="suite.take", ignore_result=True)
    def take(data: str) -> None:
        pass

    return app


app = make_app(queue=os.environ.get("SUITE_QUEUE", "default"))
