"""Schedules: tick times by interval and by cron (with DST), and the scheduler's claims:
any number of schedulers enqueue each tick once, missed ticks run once or each."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest

from soloist import App
from soloist.errors import ConfigurationError
from soloist.message import Message
from soloist.schedules import Schedule
from soloist.worker.beat import Beat, last_key, tick_id
from tests.conftest import WorkerProcesses

PARIS = ZoneInfo("Europe/Paris")


def paris(*fields: int, fold: int = 0) -> float:
    return dt.datetime(*fields, tzinfo=PARIS, fold=fold).timestamp()  # type: ignore[misc]


def test_intervals_fall_on_multiples_of_the_interval() -> None:
    s = Schedule("t", every=30)
    assert s.ticks(1000.0, 1100.0) == [1020.0, 1050.0, 1080.0]
    assert s.ticks(1020.0, 1049.0) == []
    assert s.upcoming(1020.0, 2) == [1050.0, 1080.0]
    assert s.ticks(0.0, 3000.0, limit=2) == [2970.0, 3000.0]


def test_cron_in_a_time_zone() -> None:
    s = Schedule("t", cron="*/5 * * * *", tz="Europe/Paris")
    start = paris(2026, 6, 1, 12, 1)
    assert s.upcoming(start, 2) == [paris(2026, 6, 1, 12, 5), paris(2026, 6, 1, 12, 10)]
    daily = Schedule("t", cron="0 9 * * *", tz="Europe/Paris")
    assert daily.upcoming(start, 1) == [paris(2026, 6, 2, 9, 0)]
    assert daily.period(start) == 24 * 3600


def test_a_time_skipped_in_spring_runs_once_at_the_jump() -> None:
    s = Schedule("t", cron="30 2 * * *", tz="Europe/Paris")
    # 2026-03-29: 02:00 becomes 03:00 in Paris; 02:30 does not exist that night.
    assert s.upcoming(paris(2026, 3, 28, 12, 0), 2) == [
        paris(2026, 3, 29, 3, 0),
        paris(2026, 3, 30, 2, 30),
    ]


def test_a_time_repeated_in_autumn_runs_once() -> None:
    s = Schedule("t", cron="30 2 * * *", tz="Europe/Paris")
    # 2026-10-25: 03:00 becomes 02:00 again; 02:30 happens twice.
    assert s.upcoming(paris(2026, 10, 24, 12, 0), 2) == [
        paris(2026, 10, 25, 2, 30),
        paris(2026, 10, 26, 2, 30),
    ]
    # A wildcard hour runs on real time through the repeated hour, as cron does.
    every_half_hour = Schedule("t", cron="*/30 * * * *", tz="Europe/Paris")
    assert every_half_hour.upcoming(paris(2026, 10, 25, 1, 50), 4) == [
        paris(2026, 10, 25, 2, 0),
        paris(2026, 10, 25, 2, 30),
        paris(2026, 10, 25, 2, 0, fold=1),
        paris(2026, 10, 25, 2, 30, fold=1),
    ]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({}, "give cron= or every="),
        ({"cron": "* * * * *", "every": 5}, "give cron= or every="),
        ({"every": 0}, "over 0 seconds"),
        ({"cron": "61 * * * *"}, "bad cron expression"),
        ({"every": 5, "tz": "Mars/Olympus"}, "unknown time zone"),
    ],
)
def test_bad_schedules_are_refused(options: dict[str, object], error: str) -> None:
    app = App("memory://", "memory://")
    with pytest.raises(ConfigurationError, match=error):
        app.periodic(**options)(lambda: None)  # type: ignore[arg-type]


@pytest.fixture
def beat_app(sqlite_url: str) -> Iterator[App]:
    app = App(sqlite_url, sqlite_url)

    @app.periodic(every=10, name="job", args=(1,), kwargs={"b": 2})
    def job(a: int, b: int) -> None:
        pass

    yield app
    app.close()


def sent(app: App) -> list[str]:
    """The task ids waiting on the default queue (taken off it)."""
    got = app.broker.fetch(["default"], 100, 30, 0)
    app.broker.ack_many(got)
    return sorted(Message.decode(d.body, app.codec, app.max_depth).id for d in got)


def ids(schedule: Schedule, *ticks: float) -> list[str]:
    return sorted(tick_id(schedule, t) for t in ticks)


T0 = 1_000_000.0


def test_many_schedulers_enqueue_each_tick_once(beat_app: App) -> None:
    schedule = beat_app.schedules["job"]
    beats = [Beat(beat_app, f"w{i}") for i in range(3)]
    for b in beats:
        assert b.run_once(T0) == []  # a new schedule starts now: nothing due yet
    enqueued = [
        tid for now in (T0 + 10, T0 + 20.5, T0 + 31) for b in beats for tid in b.run_once(now)
    ]
    assert sorted(enqueued) == ids(schedule, T0 + 10, T0 + 20, T0 + 30) == sent(beat_app)
    last = json.loads(beat_app.results.peek(last_key(schedule)) or "{}")
    assert last["tick"] == T0 + 30 and last["worker"] in ("w0", "w1", "w2")


def test_a_dead_claimers_tick_is_taken_once_its_lease_lapses(beat_app: App) -> None:
    schedule = beat_app.schedules["job"]
    beat = Beat(beat_app, "survivor")
    beat.run_once(T0)
    # Another scheduler claimed the next tick and died before enqueueing it.
    beat_app.results.claim(f"tick:{tick_id(schedule, T0 + 10)}", "lease dead", 0.5)
    assert beat.run_once(T0 + 10.5) == []  # leased: not enqueued, looked at again
    assert beat.run_once(T0 + 20.5) == ids(schedule, T0 + 20)  # later ticks do not wait
    deadline = time.monotonic() + 10
    while not (enqueued := beat.run_once(T0 + 21)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert enqueued == ids(schedule, T0 + 10)
    assert sent(beat_app) == ids(schedule, T0 + 10, T0 + 20)
    assert beat.run_once(T0 + 22) == []


def test_missed_ticks_run_once_on_return(beat_app: App) -> None:
    schedule = beat_app.schedules["job"]
    before = Beat(beat_app, "before")
    before.run_once(T0)
    assert before.run_once(T0 + 10) == ids(schedule, T0 + 10)
    # Every scheduler was down for 100 s.
    assert Beat(beat_app, "after").run_once(T0 + 110) == ids(schedule, T0 + 110)
    # A scheduler starting just after a tick (a restart) runs it.
    assert Beat(beat_app, "again").run_once(T0 + 121) == ids(schedule, T0 + 120)


def test_catch_up_runs_every_missed_tick(sqlite_url: str) -> None:
    app = App(sqlite_url, sqlite_url)
    app.periodic(every=10, name="job", catch_up=True)(lambda: None)
    schedule = app.schedules["job"]
    before = Beat(app, "before")
    before.run_once(T0)
    before.run_once(T0 + 10)
    caught = Beat(app, "after").run_once(T0 + 100)
    assert caught == ids(schedule, *(T0 + 10 * n for n in range(2, 11)))
    app.close()


def test_beat_needs_a_shared_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOLOIST_RESULT_URL", raising=False)
    for app in (App("memory://", "memory://"), App("amqp://guest:guest@127.0.0.1:5672/")):
        with pytest.raises(ConfigurationError, match=r"--beat needs a result store .* not "):
            Beat(app, "w")


def test_the_cli_refuses_beat_without_a_shared_store_and_lists_schedules(
    workers: WorkerProcesses,
) -> None:
    workers.use(workers.url, "memory://")
    done = workers.run("worker", "-A", "tests.support.cluster_app:app", "--beat", "--burst")
    assert done.returncode == 1
    assert "--beat needs a result store" in done.stderr, done.stderr
    workers.use(workers.url)
    plain = workers.run("schedules", "-A", "tests.support.sample_app:app")
    assert plain.returncode == 0 and "no periodic tasks" in plain.stdout
    listed = workers.run("schedules", "-A", "tests.support.cluster_app:app", "--json", "-n", "2")
    (row,) = json.loads(listed.stdout)
    assert row["name"] == "tick" and row["last"] is None and len(row["next"]) == 2
