"""Riding out a broker or result store that is down or refuses writes.

A store error while fetching, recording a result or settling says nothing about the task:
it is an outage. The worker keeps what it holds (the keeper renews those leases whenever
the broker answers), waits with back-off and tries again, for as long as it runs. Nothing
is counted against a task: its message stays leased to this worker, so no delivery is
added and no healthy task drifts towards `max_deliveries`. One line is logged when an
outage starts and one when it ends, however long it lasts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..errors import BrokerUnavailable
from .shutdown import Shutdown

log = logging.getLogger("soloist.worker")

#: Back-off between attempts while the stores are unavailable: doubling up to the cap.
FIRST_PAUSE = 0.2
MAX_PAUSE = 5.0
#: How often a back-off pause looks at whether a shutdown was asked for.
_SHUTDOWN_CHECK = 0.1


def ride_out(
    exc: BrokerUnavailable, resume: Callable[[], None], shutdown: Shutdown
) -> BrokerUnavailable | None:
    """Call `resume` with back-off until it returns without BrokerUnavailable (None), or
    until a shutdown is asked for (the last error)."""
    started = time.monotonic()
    log.warning("broker or result store unavailable, holding on and retrying: %s", exc)
    pause = FIRST_PAUSE
    while _pause(pause, shutdown):
        try:
            resume()
        except BrokerUnavailable as again:
            exc = again
            pause = min(pause * 2, MAX_PAUSE)
            continue
        down = time.monotonic() - started
        log.warning("broker and result store reachable again after %.1fs", down)
        return None
    return exc


def _pause(seconds: float, shutdown: Shutdown) -> bool:
    """Sleep `seconds` unless a shutdown is asked for first; False if one was."""
    until = time.monotonic() + seconds
    while not shutdown.requested:
        left = until - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, _SHUTDOWN_CHECK))
    return False
