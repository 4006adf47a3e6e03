"""The dashboard in a real browser: headless Chromium (Debian's package) driven by
Playwright, against `soloist dashboard` and worker processes on a live SQLite broker.

Screenshots go to artifacts/dashboard/ (gitignored) for a person to look at after a run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from soloist.brokers.sqlite import SQLiteBroker
from tests.conftest import ROOT
from tests.dashboard.conftest import Live
from tests.support.redis_support import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = ROOT / "artifacts" / "dashboard"
TOKEN = "a-browser-token-0123456789"
SCRIPT_ARG = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"

# The API tests cover Redis; the page is the same on every broker.
pytestmark = pytest.mark.parametrize("live", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (CI installs Debian's chromium: .ci/run)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def start_dashboard(live: Live, *args: str) -> tuple[subprocess.Popen[str], str]:
    """`soloist dashboard` on a free port; its base URL once it answers."""
    port = free_port()
    log = live.workers.ledger.with_name("dashboard.log")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "soloist", "dashboard", "-A", "tests.support.sample_app:app",
             "--port", str(port), "--refresh", "0.5", *args],
            env=live.workers.env, cwd=ROOT, text=True, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    live.workers.procs.append(proc)  # stopped with the workers
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/login", timeout=1).close()
            return proc, base
        except urllib.error.HTTPError:  # it answered
            return proc, base
        except OSError:  # not listening yet
            time.sleep(0.1)
    raise AssertionError(f"the dashboard did not answer: {log.read_text()}")


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_busy_worker_dead_letter_requeue_and_terminate(live: Live, browser: Any) -> None:
    flaky = live.app.tasks["fail_first"].delay(SCRIPT_ARG)
    burst = live.workers.run("worker", "-A", "tests.support.sample_app:app", "--burst")
    assert burst.returncode == 0
    live.workers.start()
    long = live.app.tasks["sleepy"].delay(60, "long")
    live.workers.wait_for("start long")
    broker = live.app.broker
    assert isinstance(broker, SQLiteBroker)
    broker.heartbeat("ghost", b"{}", ttl=300)  # a worker silent for a minute, not yet dropped
    broker.beats.connection().execute(
        "UPDATE soloist_workers SET seen_at = seen_at - 60 WHERE id = 'ghost'"
    )
    _, base = start_dashboard(live)
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        page.goto(base + "/")
        workers = page.locator("#workers tbody")
        workers.get_by_text(long.id).wait_for()
        assert "sleepy" in workers.inner_text()
        page.locator("#workers tbody tr.gone", has_text="ghost").wait_for()  # greyed out
        letter = page.locator("#dead tbody tr", has_text=flaky.id)
        letter.wait_for()
        assert SCRIPT_ARG in letter.inner_text()  # shown as text
        assert page.evaluate("window.__pwned") is None  # and never run
        shot(page, "busy-worker-and-dead-letter")
        letter.get_by_role("button", name="Requeue").click()
        page.locator("#dead tbody tr", has_text=flaky.id).wait_for(state="detached")
        # The worker is busy with the long task: stop it from the task view.
        page.goto(f"{base}/#task={long.id}")
        page.get_by_role("button", name="Revoke and terminate").click()
        page.locator("#task-state", has_text="REVOKED").wait_for()
        assert flaky.get(timeout=30) == SCRIPT_ARG  # the requeued letter ran
        page.goto(f"{base}/#task={flaky.id}")
        page.locator("#task-state", has_text="SUCCESS").wait_for()
        assert SCRIPT_ARG in page.locator("#task-value").inner_text()
        assert page.evaluate("window.__pwned") is None
        shot(page, "task-succeeded")
        assert errors == []
    finally:
        page.close()


def test_actions_refused_without_the_token(live: Live, browser: Any) -> None:
    hopeless = live.app.tasks["fail"].delay("x")
    burst = live.workers.run("worker", "-A", "tests.support.sample_app:app", "--burst")
    assert burst.returncode == 0
    _, base = start_dashboard(live, "--token", TOKEN)
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(base + "/")
        assert page.url == base + "/login"
        shot(page, "login")
        drop = """async () => (await fetch('/api/dead-letters/drop', {method: 'POST',
            headers: {'content-type': 'application/json'},
            body: JSON.stringify({queue: 'default', ids: null})})).status"""
        assert page.evaluate(drop) == 401
        page.fill("input[name=token]", "not-the-token")
        page.click("button[type=submit]")
        assert page.url == base + "/login"
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        page.locator("#dead tbody tr", has_text=hopeless.id).wait_for()
        assert page.evaluate(drop) == 403  # logged in, but without the CSRF header
        shot(page, "logged-in")
        assert len(live.app.broker.dead_letters("default")) == 1
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(base + "/login")
        assert page.evaluate(drop) == 401
    finally:
        context.close()
