"""Workflows (soloist.canvas, soloist.workflow) on the in-memory broker, run by a real
worker loop in this process (`drain`), and in eager mode."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from soloist import App, ConfigurationError, TaskError, TaskRevoked
from soloist.brokers.base import Delivery
from soloist.canvas import Signature, chain, chord, group
from soloist.execution import Kind, Outcome, TaskRunner
from soloist.message import Message
from soloist.results.base import FAILURE, REVOKED, SUCCESS
from soloist.testing import drain
from soloist.workflow import proceed
from soloist.workflow_wire import items_for


@pytest.fixture
def runs() -> Counter[str]:
    """How many times each tagged call ran."""
    return Counter()


@pytest.fixture
def tasks(app: App, runs: Counter[str]) -> dict[str, Any]:
    @app.task
    def add(a: int, b: int) -> int:
        runs[f"add {a} {b}"] += 1
        return a + b

    @app.task
    def total(values: list[int], extra: int = 0) -> int:
        runs[f"total {values}"] += 1
        return sum(values) + extra

    @app.task(max_retries=0)
    def boom(x: int) -> int:
        runs[f"boom {x}"] += 1
        raise ValueError(f"boom {x}")

    @app.task(ignore_result=True)
    def quiet(x: int) -> int:
        return x

    @app.task
    def caught(task_id: str, error: dict[str, str], tag: str) -> str:
        runs[f"caught {tag} {error['exc_type']}"] += 1
        return task_id

    return {"add": add, "total": total, "boom": boom, "caught": caught, "quiet": quiet}


def test_signatures_are_partial_or_immutable(app: App, tasks: dict[str, Any]) -> None:
    add = tasks["add"]
    partial, fixed = add.s(10), add.si(1, 2)
    assert repr(partial) == f"{add.name}.s(10)" and fixed.immutable
    assert fixed.to_dict() == {
        "task": add.name,
        "id": fixed.id,
        "queue": "default",
        "args": [1, 2],
        "immutable": True,
    }
    assert app.codec.loads(app.codec.dumps(fixed.to_dict())) == fixed.to_dict()
    linked = add.s(1).set(countdown=5, priority=2)
    linked.link(add.s(2)).link_error(tasks["caught"].s("x"))
    data = app.codec.loads(app.codec.dumps(linked.to_dict()))
    assert Signature.from_dict(app, data).to_dict() == data
    sent = [partial.delay(5), fixed.apply_async((100,)), add.s(1).set(queue="other").delay(2)]
    assert app.broker.depth("other") == 1
    drain(app, ["default", "other"])
    assert [r.get(timeout=1) for r in sent] == [15, 3, 3]


def test_set_countdown_delays_the_call(app: App, tasks: dict[str, Any]) -> None:
    result = tasks["add"].s(1, 1).set(countdown=30).delay()
    assert app.broker.stats("default").delayed == 1
    assert result.state == "PENDING"


def test_link_gets_the_result_and_link_error_the_task_id_and_error(
    app: App, tasks: dict[str, Any], runs: Counter[str]
) -> None:
    add, boom, caught = tasks["add"], tasks["boom"], tasks["caught"]
    ok = add.apply_async((1, 2), link=add.s(10))
    bad = boom.apply_async((7,), link=add.s(1), link_error=caught.s("on-error"))
    sig = boom.s(8)
    errback = caught.s("sig")
    errback.freeze()  # to find its result: otherwise each sending gets a new id
    sig.link_error(errback)
    sent = sig.delay()
    drain(app)
    assert ok.get(timeout=1) == 3 and runs["add 3 10"] == 1
    with pytest.raises(TaskError, match="boom 7"):
        bad.get(timeout=1)
    assert runs["caught on-error ValueError"] == 1 and runs["add 1"] == 0
    assert runs["caught sig ValueError"] == 1 and app.result(errback.freeze()).get(1) == sent.id


def test_chain_passes_each_result_on(app: App, tasks: dict[str, Any], runs: Counter[str]) -> None:
    add = tasks["add"]
    result = chain(add.s(1, 2), add.s(10), add.s(100)).apply_async()
    linked = add.s(1000)  # one signature, the link of two calls: each sends its own
    add.apply_async((1, 1), link=linked)
    add.apply_async((2, 2), link=linked)
    piped = (add.s(1, 1) | add.si(5, 5) | add.s(1)).delay()
    drain(app)
    assert result.get(timeout=1) == 113
    assert [s.get(timeout=1) for s in result.steps] == [3, 13, 113]
    assert piped.get(timeout=1) == 11
    assert runs["add 2 1000"] == runs["add 4 1000"] == 1


def test_a_failure_stops_the_chain_and_is_what_get_raises(
    app: App, tasks: dict[str, Any], runs: Counter[str]
) -> None:
    add, boom, caught = tasks["add"], tasks["boom"], tasks["caught"]
    result = (add.s(1, 1) | boom.s() | add.s(3) | add.s(4)).apply_async(
        link_error=caught.s("chain")
    )
    drain(app)
    with pytest.raises(TaskError, match="ValueError: boom 2"):
        result.get(timeout=1)
    assert [s.state for s in result.steps] == [SUCCESS, FAILURE, FAILURE, FAILURE]
    assert runs["boom 2"] == 1 and runs["caught chain ValueError"] == 1
    assert not any(key.startswith("add 2 3") for key in runs)


def test_arguments_that_cannot_fit_are_refused_before_anything_is_sent(
    app: App, tasks: dict[str, Any]
) -> None:
    add, total = tasks["add"], tasks["total"]
    for flow in (
        lambda: add.s(1).delay(),
        lambda: (add.s(1, 2) | add.si(1)).delay(),
        lambda: group(add.s(1, 1), add.s(1)).delay(),
        lambda: chord([add.s(1, 1)], total.si()).delay(),
        lambda: add.starmap([(1, 2), (1,)]),
    ):
        with pytest.raises(TypeError, match="arguments do not fit"):
            flow()
    assert app.broker.depth("default") == 0


def test_bad_arguments_in_a_chain_fail_it_instead_of_hanging(
    app: App, tasks: dict[str, Any]
) -> None:
    add = tasks["add"]
    result = (add.s(1, 1) | add.s(1, 2)).apply_async()  # the second step gets 3 arguments
    drain(app)
    with pytest.raises(TaskError, match="DeadLettered: arguments do not fit"):
        result.get(timeout=1)


def test_group_results_in_order_and_failures_per_member(app: App, tasks: dict[str, Any]) -> None:
    add, boom = tasks["add"], tasks["boom"]
    result = group(add.s(i, i) for i in range(5)).apply_async()
    mixed = group(add.s(1, 1), boom.s(3), add.s(2, 2)).apply_async()
    drain(app)
    assert result.get(timeout=1) == [0, 2, 4, 6, 8] and result.successful()
    with pytest.raises(TaskError, match="boom 3"):
        mixed.get(timeout=1)
    got = mixed.get(timeout=1, propagate=False)
    assert got[0] == 2 and got[2] == 4 and isinstance(got[1], TaskError)
    assert mixed.ready() and mixed.completed_count() == 2
    assert group().apply_async().get(timeout=1) == []
    quiet = group(tasks["quiet"].s(1), tasks["quiet"].s(2)).delay()  # results kept anyway
    drain(app)
    assert quiet.get(timeout=1) == [1, 2]


def test_chord_callback_gets_the_results_in_order_once(
    app: App, tasks: dict[str, Any], runs: Counter[str]
) -> None:
    add, total = tasks["add"], tasks["total"]
    result = chord([add.s(i, i) for i in range(10)], total.s(extra=1)).apply_async()
    piped = (group(add.s(1, 1), add.s(2, 2)) | total.s()).delay()
    drain(app, prefetch=3)
    assert result.get(timeout=1) == 91
    assert runs[f"total {[2 * i for i in range(10)]}"] == 1
    assert result.group.get(timeout=1) == [2 * i for i in range(10)]
    assert piped.get(timeout=1) == 6


def test_a_failed_member_fails_the_chord_and_runs_the_callbacks_errback(
    app: App, tasks: dict[str, Any], runs: Counter[str]
) -> None:
    add, boom, total, caught = tasks["add"], tasks["boom"], tasks["total"], tasks["caught"]
    callback = total.s()
    callback.link_error(caught.s("chord"))
    result = chord([add.s(1, 1), boom.s(5), add.s(2, 2)], callback).apply_async()
    drain(app)
    with pytest.raises(TaskError, match=r"ChordError: chord member 1 \(\w+\) failed: ValueError"):
        result.get(timeout=1)
    assert runs["caught chord ChordError"] == 1
    assert not any(key.startswith("total") for key in runs)


def test_an_empty_chord_runs_the_callback_on_an_empty_list(app: App, tasks: dict[str, Any]) -> None:
    result = chord([], tasks["total"].s(extra=5)).apply_async()
    drain(app)
    assert result.get(timeout=1) == 5


def test_revoking_a_workflow_stops_what_has_not_started(
    app: App, tasks: dict[str, Any], runs: Counter[str]
) -> None:
    add, total = tasks["add"], tasks["total"]
    steps = (add.s(1, 1) | add.s(2) | add.s(3)).apply_async()
    members = group(add.s(i, 100) for i in range(3)).apply_async()
    joined = chord([add.s(i, 200) for i in range(3)], total.s()).apply_async()
    assert steps.revoke() and members.revoke() and joined.revoke()
    drain(app)
    assert [s.state for s in steps.steps] == [REVOKED] * 3
    with pytest.raises(TaskRevoked):
        steps.get(timeout=1)
    with pytest.raises(TaskRevoked):
        joined.get(timeout=1)
    assert [r.state for r in members] == [REVOKED] * 3
    assert sum(runs.values()) == 0


def test_revoking_one_step_revokes_the_rest_of_its_chain(app: App, tasks: dict[str, Any]) -> None:
    add = tasks["add"]
    result = (add.s(1, 1) | add.s(2) | add.s(3)).apply_async()
    result.steps[1].revoke()
    drain(app)
    assert [s.state for s in result.steps] == [SUCCESS, REVOKED, REVOKED]


def test_map_starmap_and_chunks_collect_their_results(app: App, tasks: dict[str, Any]) -> None:
    add, total = tasks["add"], tasks["total"]
    mapped = total.map([[1, 2], [3]])
    starred = add.starmap([(1, 2), (3, 4)])
    chunked = add.chunks([(i, i) for i in range(7)], 3)
    assert app.broker.depth("default") == 2 + 2 + 3
    drain(app)
    assert mapped.get(timeout=1) == [3, 3]
    assert starred.get(timeout=1) == [3, 7]
    assert chunked.get(timeout=1) == [[0, 2, 4], [6, 8, 10], [12]]
    with pytest.raises(ConfigurationError):
        add.chunks([(1, 1)], 0)


def test_workflows_run_in_eager_mode(runs: Counter[str]) -> None:
    app = App(eager=True)

    @app.task
    def inc(x: int) -> int:
        return x + 1

    @app.task
    def total(values: list[int]) -> int:
        return sum(values)

    assert (inc.s(1) | inc.s() | inc.s()).delay().get(timeout=1) == 4
    assert chord([inc.s(i) for i in range(4)], total.s()).delay().get(timeout=1) == 10


def test_steps_must_be_signatures(tasks: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="a chain step must be a signature"):
        chain(tasks["add"].s(1, 1), object())  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="a group member must be"):
        group(tasks["add"].s(1, 1), group())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="must be followed by a step"):
        (tasks["add"].s(1, 1) | group(tasks["add"].s(1))).delay()


def _member_outcome(
    app: App, sig: Signature[Any], value: int, chord_msg: dict[str, Any]
) -> Outcome:
    body = app.codec.dumps({"value": value})
    app.results.put(sig.freeze(), SUCCESS, body, 60)
    return Outcome(Kind.SUCCESS, sig.freeze(), sig.task, body, workflow={"chord": chord_msg})


def test_a_continuation_replayed_after_a_crash_runs_nothing_twice(
    app: App, tasks: dict[str, Any], runs: Counter[str]
) -> None:
    """A worker that stored a member's result and sent the callback, then died before the
    ack: the redelivered member is continued again; only the completing member sends the
    callback, and its second copy is settled without running."""
    add, total = tasks["add"], tasks["total"]
    members, callback = [add.s(1, 1), add.s(2, 2)], total.s()
    chord_msg = {"id": callback.freeze(), "n": 2, "cb": callback.to_dict()}
    first = _member_outcome(app, members[0], 2, {**chord_msg, "i": 0})
    last = _member_outcome(app, members[1], 4, {**chord_msg, "i": 1})
    proceed(app, [first])
    assert app.broker.depth("default") == 0
    proceed(app, [last])
    assert app.broker.depth("default") == 1
    # Both redelivered and continued again, once with no record (the task runner found
    # the result stored before it took them): the first sends nothing, the last a copy.
    last.record = None
    for outcome in (first, last):
        proceed(app, [outcome])
    assert app.broker.depth("default") == 2
    stats = drain(app)
    assert app.result(callback.freeze()).get(timeout=1) == 6
    assert runs["total [2, 4]"] == 1 and stats.done == 2


def test_two_copies_of_a_sent_step_taken_at_once_run_once(
    app: App, tasks: dict[str, Any], runs: Counter[str]
) -> None:
    """A worker died after sending a step and before its ack, so its redelivery sent the
    step again, and both copies wait: the first copy taken claims the run."""
    step = tasks["add"].s(10)
    ((message, queue, _, _),) = items_for(step.to_dict(), (2,), resent=True)
    app.send_many([(message, queue, 0.0, 0), (message, queue, 0.0, 0)])
    stats = drain(app, prefetch=2)
    assert runs["add 2 10"] == 1 and stats.done == 2
    assert app.result(message.id).get(timeout=1) == 12


def test_a_sent_step_delivered_twice_under_one_broker_id_runs_once(
    app: App, tasks: dict[str, Any], runs: Counter[str]
) -> None:
    """A broker that hands the same message out again after it was settled: the claim is
    its own, but the step has finished, so it does not run again."""
    ((message, queue, _, _),) = items_for(tasks["add"].s(10).to_dict(), (2,), resent=True)
    delivery = Delivery("m1", queue, app.encode(message), 1, 0)
    runner = TaskRunner(app)
    first = runner.run(delivery)
    assert first.record is not None
    app.results.put(message.id, SUCCESS, first.record, 60)
    again = runner.run(delivery)
    assert runs["add 2 10"] == 1
    assert (again.kind, again.record, again.workflow) == (Kind.SUCCESS, None, first.workflow)


def test_a_second_copy_of_a_sent_step_does_not_run_again(
    app: App, tasks: dict[str, Any], runs: Counter[str]
) -> None:
    """A step sent twice (see above), the second copy taken after the first finished."""
    add = tasks["add"]
    result = (add.s(1, 1) | add.s(10)).apply_async()
    drain(app)
    assert result.get(timeout=1) == 12
    step = add.s(10).set(task_id=result.id)
    ((message, queue, _, _),) = items_for(step.to_dict(), (2,), resent=True)
    app.send(message, queue)
    drain(app)
    assert runs["add 2 10"] == 1


@pytest.mark.parametrize(
    "flow",
    [
        {"chain": [{"nope": 1}]},
        {"chord": {"id": "c"}},
        {"chord": {"id": "c1", "i": 0, "n": 1, "cb": {"nope": 1}}},
        {"link": "x"},
        {"err": [None]},
    ],
    ids=["chain", "chord", "callback", "link", "err"],
)
def test_malformed_workflow_options_lose_nothing(
    app: App, tasks: dict[str, Any], flow: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    add = tasks["add"]
    message = Message(add.name, (1, 2), options={"wf": flow})
    if "err" in flow:
        message.args = (1, "x")  # fails, so the errbacks are read
    app.send(message, "default")
    stats = drain(app)
    assert stats.done + stats.failed == 1 and app.broker.depth("default") == 0
    assert app.result(message.id).state in (SUCCESS, FAILURE)
    assert "malformed workflow options" in caplog.text


def test_groups_and_chords_of_chains(app: App, tasks: dict[str, Any]) -> None:
    add, total = tasks["add"], tasks["total"]
    chains = group(add.s(1, 1) | add.s(1), add.s(5, 5)).delay()
    joined = chord([add.s(1, 1) | add.s(10), add.s(2, 2) | add.s(20)], total.s()).delay()
    drain(app)
    assert chains.get(timeout=1) == [3, 10]
    assert joined.get(timeout=1) == 36 and joined.group.get(timeout=1) == [12, 24]


def test_a_group_in_a_chain_is_a_chord(app: App, tasks: dict[str, Any]) -> None:
    add, total = tasks["add"], tasks["total"]
    result = (add.si(1, 1) | group(add.s(10), add.s(20)) | total.s() | add.s(5)).delay()
    nested = chord(
        [add.si(1, 1) | group(add.s(1), add.s(2)) | total.s(), add.si(0, 1)], total.s()
    ).delay()
    drain(app)
    assert result.get(timeout=1) == 39  # total([12, 22]) + 5
    assert len(result.steps) == 5
    assert nested.get(timeout=1) == 8  # total([total([3, 4]), 1])


def test_a_failure_inside_a_chord_member_chain_fails_the_chord(
    app: App, tasks: dict[str, Any], runs: Counter[str]
) -> None:
    add, boom, total, caught = tasks["add"], tasks["boom"], tasks["total"], tasks["caught"]
    callback = total.s()
    callback.link_error(caught.s("outer"))
    member = add.s(1, 1) | boom.s() | add.s(1)
    result = chord([member, add.s(2, 2)], callback).delay()
    deeper = chord([add.si(1, 1) | chord([boom.si(9)], total.s())], total.s()).delay()
    drain(app)
    with pytest.raises(TaskError, match=r"ChordError: chord member 0 \(\w+\) failed: ValueError"):
        result.get(timeout=1)
    assert [s.state for s in result.group[0].steps] == [SUCCESS, FAILURE, FAILURE]  # type: ignore[attr-defined]
    assert runs["caught outer ChordError"] == 1 and not any(k.startswith("total") for k in runs)
    with pytest.raises(TaskError, match="ChordError: chord member 0"):
        deeper.get(timeout=1)


def test_a_failure_before_a_chord_in_a_chain_fails_everything_after_it(
    app: App, tasks: dict[str, Any], runs: Counter[str]
) -> None:
    add, boom, total = tasks["add"], tasks["boom"], tasks["total"]
    result = (boom.si(1) | group(add.s(1), add.s(2)) | total.s() | add.s(1)).delay()
    drain(app)
    with pytest.raises(TaskError, match="ValueError: boom 1"):
        result.get(timeout=1)
    assert [s.state for s in result.steps] == [FAILURE] * 5
    assert runs == Counter({"boom 1": 1})


def test_revoking_a_chain_with_a_chord_revokes_its_members(
    app: App, tasks: dict[str, Any], runs: Counter[str]
) -> None:
    add, total = tasks["add"], tasks["total"]
    result = (add.si(1, 1) | group(add.s(1), add.s(2)) | total.s()).delay()
    assert result.revoke()
    drain(app)
    assert [s.state for s in result.steps] == [REVOKED] * 4
    assert sum(runs.values()) == 0


def test_nested_workflows_run_in_eager_mode() -> None:
    app = App(eager=True)

    @app.task
    def inc(x: int) -> int:
        return x + 1

    @app.task
    def total(values: list[int]) -> int:
        return sum(values)

    assert (inc.s(0) | group(inc.s(), inc.s()) | total.s()).delay().get(timeout=1) == 4
