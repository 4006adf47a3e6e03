"""Workflows on the wire: the steps message options carry under `wf` (a signature's
`Signature.to_dict`, or a chord step: its members and its callback), and the messages that
start a step. Shared by the producer (soloist.canvas) and the worker (soloist.workflow).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .message import Message

#: The message options of a call: (message, queue, delay, priority), as App.send_many takes.
Item = tuple[Message, str, float, int]


def items_for(
    step: dict[str, Any],
    prepend: tuple[Any, ...],
    rest: Sequence[dict[str, Any]] = (),
    *,
    resent: bool = False,
) -> list[Item]:
    """The messages that start `step` (a signature's `to_dict`, or a chord step: its
    members, or its callback if it has none), with `prepend` before each call's arguments
    (unless immutable) and `rest` the chain steps that follow it. `resent` marks messages a
    worker sends: they may be second copies (see soloist.workflow)."""
    if "group" in step:  # a chord step: what follows it is in its callback's options
        if not step["group"]:  # nothing to wait for: the callback runs now, on an empty list
            return items_for(step["cb"], ([],), resent=resent)
        return [item for m in step["group"] for item in items_for(m, prepend, resent=resent)]
    args = step.get("args", [])
    if not step.get("immutable"):
        args = [*prepend, *args]
    # Even empty: a workflow's calls store their results, `ignore_result` or not.
    flow = dict(step.get("wf", {}))
    if rest:
        flow["chain"] = list(rest)
    if resent:
        flow["p"] = 1
    message = Message(step["task"], tuple(args), dict(step.get("kwargs", {})), id=step["id"])
    message.options["wf"] = flow
    return [
        (message, step["queue"], float(step.get("countdown", 0.0)), int(step.get("priority", 0)))
    ]


def ids_of(step: dict[str, Any]) -> list[str]:
    """The task ids of a wire step and of what is chained after it, the last one last."""
    if "group" in step:
        return [task_id for m in step["group"] for task_id in ids_of(m)] + ids_of(step["cb"])
    chained = step.get("wf", {}).get("chain", ())
    return [step["id"], *(task_id for s in chained for task_id in ids_of(s))]


def last_call(step: dict[str, Any]) -> dict[str, Any]:
    """The call a self-contained wire step ends with."""
    if "group" in step:
        return last_call(step["cb"])
    chained = step.get("wf", {}).get("chain")
    return last_call(chained[-1]) if chained else step
