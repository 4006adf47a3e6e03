"""The dashboard's JSON API on a live broker (SQLite and Redis) with real workers."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from soloist import App, chain
from soloist.dashboard.board import ARGS_LIST, Board, Throughput
from soloist.dashboard.server import create_app
from tests.conftest import WorkerProcesses
from tests.dashboard.conftest import Client, Live
from tests.test_cli import assert_one_line_error

APP = ("-A", "tests.support.sample_app:app")
TOKEN = "a-test-token-0123456789"


def until(read: Any, check: Any, timeout: float = 20) -> Any:
    """Poll `read()` until `check(value)` holds; the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if check(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def post(c: TestClient, path: str, body: dict[str, Any], **headers: str) -> Any:
    csrf = c.get("/api/session").json()["csrf"]
    return c.post(path, json=body, headers={"x-soloist-csrf": csrf, **headers})


def test_overview_shows_queues_and_a_busy_worker_with_its_task(live: Live, client: Client) -> None:
    proc = live.workers.start()
    long = live.app.tasks["sleepy"].delay(60, "long")
    live.app.tasks["add"].apply_async((1, 2), countdown=300)
    live.workers.wait_for("start long")
    c = client()

    def busy(snap: dict[str, Any]) -> bool:
        return any(r["id"] == long.id for w in snap["workers"] for r in w["running"])

    snap = until(lambda: c.get("/api/overview").json(), busy)
    (worker,) = [w for w in snap["workers"] if w["pid"] == proc.pid]
    assert not worker["gone"] and worker["pool"] == "solo"
    assert [r["task"] for r in worker["running"]] == ["sleepy"]
    default = {q["queue"]: q for q in snap["queues"]}["default"]
    assert (default["delayed"], default["in_flight"], default["dead"]) == (1, 1, 0)
    assert len(snap["throughput"]["done"]) == 60
    task = c.get(f"/api/tasks/{long.id}").json()
    assert task["state"] == "PENDING" and task["running"][0]["worker"] == worker["id"]
    revoked = post(c, f"/api/tasks/{long.id}/revoke", {"terminate": True})
    assert revoked.json() == {"revoked": True}
    assert until(lambda: long.state, lambda s: s == "REVOKED") == "REVOKED"
    proc.terminate()
    assert proc.wait(timeout=20) == 0


def test_dead_letters_listed_shown_requeued_and_dropped(live: Live, client: Client) -> None:
    flaky = live.app.tasks["fail_first"].delay("x" * 500)
    hopeless = live.app.tasks["fail"].delay("<b>h</b>")
    assert live.workers.run("worker", *APP, "--burst").returncode == 0
    c = client()
    letters = {e["task_id"]: e for e in c.get("/api/dead-letters").json()}
    entry = letters[flaky.id]
    assert entry["task"] == "fail_first" and "RuntimeError: first run" in entry["reason"]
    assert len(entry["args"]) == ARGS_LIST and entry["args"].endswith("…")
    one = c.get(f"/api/dead-letters/{entry['queue']}/{entry['id']}").json()
    assert "x" * 500 in one["args"]
    assert c.get(f"/api/dead-letters/{entry['queue']}/nope").status_code == 404
    failed = c.get(f"/api/tasks/{hopeless.id}").json()
    assert failed["state"] == "FAILURE" and failed["error"]["type"] == "RuntimeError"
    assert "failing <b>h</b>" in failed["error"]["traceback"]
    assert "<b>h</b>" in failed["dead_letter"]["args"]
    moved = post(c, "/api/dead-letters/requeue", {"queue": "default", "ids": [entry["id"]]})
    assert moved.json() == {"requeued": 1}
    assert live.workers.run("worker", *APP, "--burst").returncode == 0
    assert flaky.get(timeout=5) == "x" * 500
    assert c.get(f"/api/tasks/{flaky.id}").json()["value"] == json.dumps("x" * 500)
    dropped = post(c, "/api/dead-letters/drop", {"queue": "default", "ids": None})
    assert dropped.json() == {"dropped": 1}
    assert c.get("/api/dead-letters").json() == []
    bad = post(c, "/api/dead-letters/drop", {"queue": "default", "ids": "all"})
    assert bad.status_code == 400
    huge = post(c, "/api/dead-letters/drop", {"queue": "default", "ids": ["x" * 300_000]})
    assert huge.status_code == 413


def test_token_protects_every_page_and_action(live: Live, client: Client) -> None:
    c = client(token=TOKEN)
    for path in ("/", "/api/overview", "/api/session", "/api/dead-letters", "/api/tasks/x"):
        got = c.get(path, follow_redirects=False)
        assert got.status_code in (401, 303), path
    assert c.post("/api/dead-letters/drop", json={"queue": "default"}).status_code == 401
    assert c.post("/login", data={"token": "wrong"}).status_code == 401
    assert c.post("/login", data={"token": TOKEN}, follow_redirects=False).status_code == 303
    assert c.get("/api/overview").status_code == 200
    # Logged in, an action still needs the CSRF header, and a foreign Origin is refused.
    body = {"queue": "default", "ids": None}
    assert c.post("/api/dead-letters/drop", json=body).status_code == 403
    foreign = post(c, "/api/dead-letters/drop", body, origin="http://evil.example")
    assert foreign.status_code == 403
    assert post(c, "/api/dead-letters/drop", body).json() == {"dropped": 0}
    # Scripts use the token itself.
    script = client(token=TOKEN)
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert script.get("/api/overview", headers=bearer).status_code == 200
    assert script.post("/api/dead-letters/drop", json=body, headers=bearer).status_code == 200
    wrong = {"authorization": "Bearer nope"}
    assert script.get("/api/overview", headers=wrong).status_code == 401


def test_read_only_refuses_actions(live: Live, client: Client) -> None:
    pending = live.app.tasks["add"].apply_async((1, 2), countdown=300)
    c = client(read_only=True)
    assert c.get("/api/session").json()["read_only"] is True
    refused = post(c, f"/api/tasks/{pending.id}/revoke", {})
    assert refused.status_code == 403 and "read-only" in refused.json()["error"]
    assert pending.state == "PENDING"


def test_a_foreign_host_is_refused_on_loopback(live: Live, client: Client) -> None:
    c = client()
    assert c.get("/api/overview", headers={"host": "evil.example:8800"}).status_code == 400


def test_no_url_password_in_any_answer(tmp_path: Any) -> None:
    # A broker that cannot be reached: the error is shown, its password is not.
    app = App("redis://user:s3cret-pw@127.0.0.1:1/0", "redis://user:s3cret-pw@127.0.0.1:1/0")
    c = TestClient(create_app(app), base_url="http://127.0.0.1")
    session = c.get("/api/session")
    assert "***" in session.json()["broker"]
    answers = [session, c.get("/api/overview"), c.get("/api/tasks/x"), c.get("/")]
    assert answers[1].status_code == 503 and answers[1].json()["error"]
    for answer in answers:
        assert "s3cret-pw" not in answer.text
    assert "content-security-policy" in answers[3].headers


def test_throughput_counts_the_growth_of_worker_counters() -> None:
    t = Throughput()
    t.observe(600.0, [{"id": "a", "done": 10, "failed": 1}])
    t.observe(610.0, [{"id": "a", "done": 15, "failed": 1}, {"id": "b", "done": 7}])
    t.observe(665.0, [{"id": "a", "done": 16, "failed": 3}, {"id": "b", "done": 9}])
    series = t.series(665.0)
    assert series["done"][-2:] == [5, 3] and series["failed"][-2:] == [0, 2]
    assert sum(series["done"]) == 8


@pytest.mark.parametrize(
    "args, code",
    [(("--host", "0.0.0.0"), 2), (("--token", "short"), 2)],
)
def test_bad_arguments(workers: WorkerProcesses, args: tuple[str, ...], code: int) -> None:
    assert_one_line_error(workers.run("dashboard", *APP, *args), code)


def test_schedules(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/schedules.db"
    app = App(url, url)
    app.periodic(every=60, name="cleanup", queue="maintenance")(lambda: None)
    c = TestClient(create_app(app), base_url="http://127.0.0.1")
    (entry,) = c.get("/api/schedules").json()
    assert entry["name"] == "cleanup" and entry["queue"] == "maintenance"
    assert len(entry["next"]) == 3 and entry["last"] is None
    empty = TestClient(create_app(App(url, url)), base_url="http://127.0.0.1")
    assert empty.get("/api/schedules").json() == []
    c.close()
    empty.close()
    app.close()


def test_a_dead_chain_step_shows_what_follows(live: Live, client: Client) -> None:
    tasks = live.app.tasks
    flow = chain(tasks["fail"].s("step"), tasks["add"].s(1), tasks["add"].s(2))
    last = flow.apply_async()
    assert live.workers.run("worker", *APP, "--burst").returncode == 0
    c = client()
    (letter,) = c.get("/api/dead-letters").json()
    shown = c.get(f"/api/tasks/{letter['task_id']}").json()
    (follows,) = shown["dead_letter"]["workflow"]
    assert follows["as"] == "next in chain (2 steps left)" and follows["task"] == "add"
    assert follows["id"] and follows["id"] != last.id  # the middle step, then the last


def test_a_failed_background_read_keeps_the_last_snapshot(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    board = Board(app, refresh=0.05)
    first = board.overview()
    assert "error" not in first

    def down() -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(app.broker, "workers", down)
    shown = until(board.overview, lambda snap: "error" in snap, timeout=10)
    assert shown["error"] == "ConnectionError: broker down"
    assert shown["queues"] == first["queues"]  # the last reading, still shown
    monkeypatch.undo()
    assert "error" not in until(board.overview, lambda snap: "error" not in snap, timeout=10)


def test_open_pages_share_one_read_of_the_broker(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"workers": 0, "stats": 0}
    for name in calls:
        real = getattr(app.broker, name)

        def counted(*args: Any, _real: Any = real, _name: str = name) -> Any:
            calls[_name] += 1
            return _real(*args)

        monkeypatch.setattr(app.broker, name, counted)
    c = TestClient(create_app(app, refresh=60), base_url="http://127.0.0.1")
    for _ in range(50):  # ten pages polling five times within one refresh
        assert c.get("/api/overview").status_code == 200
    assert calls == {"workers": 1, "stats": 1}  # one queue, read once
    c.close()
