"""`soloist worker`: run a worker."""

from __future__ import annotations

import sys

import click

from .. import logs
from ..app import App
from ..logs import FORMATS
from ..pools import NAMES as POOL_NAMES
from ..supervisor import Supervisor
from ..worker import Worker
from ..worker.constants import AUTO_PREFETCH, DEFAULT_LEASE, EXIT_RECYCLE, PREFETCH_HORIZON
from .common import app_option, load_app, setup_logging


def _positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise click.BadParameter("must be greater than 0")
    return value


def _range(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        low, high = (int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected MIN,MAX (two whole numbers), not {value!r}") from None
    if not 1 <= low <= high:
        raise click.BadParameter(f"expected 1 <= MIN <= MAX, not {value!r}")
    return low, high


def _replica_command(ctx: click.Context) -> list[str]:
    """This very command, for one replica: every option given, except the supervisor's."""
    command = [sys.executable, "-m", "soloist", "worker"]
    for param in ctx.command.params:
        value = ctx.params[param.name or ""]
        if param.name in ("replicas", "autoscale") or value is None or value is False:
            continue
        flag = max(param.opts, key=len)
        command += [flag] if value is True else [flag, str(value)]
    return command


@click.command()
@app_option
@click.option(
    "-Q",
    "--queues",
    default=None,
    show_default="the app's default queue: default",
    help="Comma-separated queues, in priority order.",
)
@click.option("--pool", type=click.Choice(POOL_NAMES), default="solo", show_default=True)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Tasks at once in the threads and processes pools (solo runs one: see --replicas).",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    default=None,
    help="Deliveries fetched per round trip. Default: adaptive, from 1 up to "
    f"{AUTO_PREFETCH}, as many as run in about {PREFETCH_HORIZON * 1000:.0f} ms.",
    show_default="adaptive",
)
@click.option(
    "--settle-batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Ended tasks whose results and acks are sent together. 1 settles each task as it "
    "ends, so a SIGKILL runs again only the task that was running; N trades up to N-1 "
    "re-runs per kill for fewer round trips (no-op tasks 1.5-5x faster at 100, by broker).",
)
@click.option(
    "--lease",
    type=float,
    default=DEFAULT_LEASE,
    show_default=True,
    callback=_positive,
    help="Seconds a delivery stays invisible between renewals.",
)
@click.option(
    "--time-limit",
    type=float,
    default=None,
    callback=_positive,
    show_default="none",
    help="Default hard time limit in seconds.",
)
@click.option(
    "--soft-time-limit",
    type=float,
    default=None,
    callback=_positive,
    show_default="none",
    help="Default soft time limit in seconds.",
)
@click.option("--burst", is_flag=True, help="Exit 0 once the queues are empty.")
@click.option(
    "--beat",
    is_flag=True,
    help="Also enqueue the app's periodic tasks. Safe on every worker: each tick is "
    "claimed in the result store and enqueued once.",
)
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    default=None,
    show_default="never",
    help="Replace a process after this many tasks: a processes-pool child, else the worker "
    f"itself (it exits {EXIT_RECYCLE} for its supervisor to start a fresh one).",
)
@click.option(
    "--max-memory-per-child",
    type=float,
    default=None,
    callback=_positive,
    metavar="MB",
    show_default="never",
    help="Replace a process once its resident memory passes this many MB after a task.",
)
@click.option(
    "--cpus",
    type=click.IntRange(min=1),
    default=None,
    show_default="no budget",
    help="A CPU budget shared by every Soloist worker on this host: a task declaring "
    "cpus=K starts only once K of these N are free.",
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=None,
    show_default="one worker, no supervisor",
    help="Run a supervisor and this many independent workers, restarted when they die.",
)
@click.option(
    "--autoscale",
    default=None,
    callback=_range,
    metavar="MIN,MAX",
    show_default="off",
    help="With a supervisor: between MIN and MAX replicas, by queue depth and idleness.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    show_default="off",
    help="Serve Prometheus metrics on this port (each replica: the next free one).",
)
@click.option(
    "--log-format",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="json: one JSON object per line, for log pipelines.",
)
@click.option(
    "--loglevel",
    "-l",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
def worker(
    app_path: str,
    queues: str | None,
    pool: str,
    concurrency: int,
    prefetch: int | None,
    settle_batch: int,
    lease: float,
    time_limit: float | None,
    soft_time_limit: float | None,
    burst: bool,
    beat: bool,
    max_tasks_per_child: int | None,
    max_memory_per_child: float | None,
    cpus: int | None,
    replicas: int | None,
    autoscale: tuple[int, int] | None,
    metrics_port: int | None,
    log_format: str,
    loglevel: str,
) -> None:
    """Run a worker: each task runs inline in its main thread (with --pool solo).

    Exits 0 after a warm shutdown or --burst, 1 for bad configuration or a broker or result
    store it cannot use, 2 for a usage error, 3 after a cold shutdown, 4 after a hard time
    limit, 5 when recycled by --max-tasks-per-child or --max-memory-per-child, 6 when told
    to stop while its broker or result store was down (an outage alone never ends it)."""
    if pool == "solo" and concurrency != 1:
        raise click.UsageError(
            f"the solo pool runs one task at a time, so -c {concurrency} would be ignored: "
            f"use --pool threads -c {concurrency} or --pool processes -c {concurrency}, "
            f"or --replicas {concurrency} for {concurrency} solo workers"
        )

    setup_logging(loglevel, log_format)
    app = load_app(app_path)
    logs.redact(app)
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    if replicas is not None or autoscale is not None:
        sys.exit(_supervise(app, names, replicas, autoscale, burst))
    w = Worker(
        app,
        names,
        pool=pool,
        concurrency=concurrency,
        prefetch=prefetch,
        settle_batch=settle_batch,
        lease=lease,
        burst=burst,
        time_limit=time_limit,
        soft_time_limit=soft_time_limit,
        max_tasks_per_child=max_tasks_per_child,
        max_memory_per_child=max_memory_per_child,
        beat=beat,
        cpus=cpus,
    )
    logs.task_events(app)
    if metrics_port is not None:
        from ..metrics import serve  # here: prometheus_client is an optional extra

        serve(w, metrics_port)
    sys.exit(w.run())


def _supervise(
    app: App,
    queues: list[str] | None,
    replicas: int | None,
    autoscale: tuple[int, int] | None,
    burst: bool,
) -> int:
    low, high = autoscale or (1, replicas or 1)
    if replicas is None:
        replicas = low
    elif not low <= replicas <= high:
        raise click.BadParameter(
            f"must be within --autoscale {low},{high}", param_hint="--replicas"
        )
    names = queues or [app.default_queue]
    app.broker.ping()  # fail fast, with one line, if the broker is unreachable
    if autoscale is None and not burst:
        app.close()  # the replicas have their own connections; this one is not needed

    def depth() -> int:
        return sum(app.broker.depth(q) for q in names)

    command = _replica_command(click.get_current_context())
    return Supervisor(command, replicas, autoscale=autoscale, depth=depth, burst=burst).run()
