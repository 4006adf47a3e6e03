"""Worker defaults and exit codes, each with why it has its value."""

from __future__ import annotations

#: Exit codes a supervisor (or systemd, Kubernetes) can tell apart.
EXIT_OK = 0
#: Bad configuration or an unreachable broker at start-up: restarting will not help.
EXIT_CONFIG = 1
#: Cold shutdown: the worker gave its running delivery back.
EXIT_COLD_SHUTDOWN = 3
#: A task passed its hard time limit; the failure is recorded and a fresh process is needed.
EXIT_HARD_TIME_LIMIT = 4
#: Past --max-tasks-per-child or --max-memory-per-child: finished warm, wants a fresh process.
EXIT_RECYCLE = 5
#: Stopped (on a shutdown signal) while the broker or result store was down: what it held
#: could not be settled, and runs again once its leases lapse.
EXIT_UNAVAILABLE = 6

#: A lease long enough that renewals every lease/3 survive a few slow broker round trips.
DEFAULT_LEASE = 30.0
#: Adaptive prefetch (the default): fetch as many deliveries as take about this long to
#: run, judged by the last task's run time, from 1 up to AUTO_PREFETCH (one round trip
#: then serves 100 no-op tasks). A task slower than this gives the rest back at once.
PREFETCH_HORIZON = 0.05
AUTO_PREFETCH = 100
#: Settles written down a broker's pipe before their replies are read (they are read
#: before each fetch anyway): bounds the replies waiting in the socket.
PIPE_DEPTH = 1000
#: How long one idle fetch blocks; bounds how late an idle worker sees a warm shutdown.
FETCH_WAIT = 0.5
#: How long it blocks on a broker whose wait a warm shutdown cuts short
#: (`Broker.interruptible`): fewer calls while idle (Redis: one claim and one BLPOP per
#: 10 s).
IDLE_FETCH_WAIT = 10.0
#: How long a fetch blocks while tasks run in a pool with free slots: the main thread
#: settles their outcomes between fetches, so this bounds how late a result is stored.
BUSY_FETCH_WAIT = 0.05
#: Liveness: a heartbeat this often; `status` calls a worker gone after a few missed ones
#: (15 s). Each beat is a script on Redis: every 5 s rather than 2 s keeps an idle worker's
#: heartbeat near 10 µs of Redis CPU a second (benchmarks/idle_bench.py).
HEARTBEAT_INTERVAL = 5.0
HEARTBEAT_TTL = 300.0
#: The keeper wakes this often to check time limits.
KEEPER_TICK = 0.1
#: After a cold shutdown or hard limit, how long the keeper waits for the main thread
#: before it ends the process itself (the main thread may be stuck in C code).
GRACE = 1.0
