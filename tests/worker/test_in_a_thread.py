"""A worker run in a thread of another program (an app that embeds one, a test): it
leaves signal handlers alone, which only the main thread may set."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import pytest

from soloist import App
from soloist.errors import SoftTimeLimitExceeded, TaskError
from soloist.worker import Worker


def start_in_a_thread(worker: Worker) -> tuple[threading.Thread, list[BaseException]]:
    """`worker.run()` started in a thread of its own; the list gets what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_a_worker_in_a_thread_leaves_the_main_threads_handlers_alone() -> None:
    app = App("memory://", "memory://")
    started, replaced = threading.Event(), threading.Event()

    @app.task
    def wait_for_main() -> str:
        started.set()
        assert replaced.wait(10)
        return "done"

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    def own(signum: int, frame: FrameType | None) -> None:
        pass

    first = wait_for_main.delay()
    then = add.delay(1, 2)
    worker = Worker(app, burst=True, watchdog=False, owns_process=False)
    previous = signal.getsignal(signal.SIGUSR1)
    thread, errors = start_in_a_thread(worker)
    try:
        # The program's main thread sets a handler of its own while a task runs: the
        # worker does not take it for the task's doing and "restore" it.
        assert started.wait(10)
        signal.signal(signal.SIGUSR1, own)
        replaced.set()
        thread.join(30)
        assert not thread.is_alive() and errors == []
        assert signal.getsignal(signal.SIGUSR1) is own
    finally:
        replaced.set()
        thread.join(30)
        signal.signal(signal.SIGUSR1, previous)
    assert first.get(timeout=1) == "done" and then.get(timeout=1) == 3
    assert (worker.stats.done, worker.stats.failed) == (2, 0)


def test_a_worker_in_a_thread_keeps_soft_time_limits() -> None:
    """SIGALRM reaches only the main thread: in another thread the soft limit comes from a
    timer thread, raised at the task's next bytecode, and the task can clean up."""
    app = App("memory://", "memory://")
    cleaned = threading.Event()

    @app.task(soft_time_limit=0.2)
    def spin() -> str:
        try:
            while True:  # Python bytecode, as a step of real work would be
                pass
        except SoftTimeLimitExceeded:
            cleaned.set()
            raise

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    slow, then = spin.delay(), add.delay(1, 2)
    thread, errors = start_in_a_thread(Worker(app, burst=True, watchdog=False, owns_process=False))
    thread.join(30)
    assert not thread.is_alive() and errors == []
    assert cleaned.is_set()
    with pytest.raises(TaskError) as err:
        slow.get(timeout=1)
    assert err.value.exc_type == "SoftTimeLimitExceeded"
    assert then.get(timeout=1) == 3
