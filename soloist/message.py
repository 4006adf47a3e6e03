"""The message envelope: what a producer puts on a queue to ask for one task call.

Protocol version 1 is a map with short keys, serialized by a `Codec`:
`v` version, `id` task id, `task` task name, `args`, `kwargs`, `sent` unix time (to 10 µs),
and `opts` per-call options the worker must honour (e.g. `ignore_result`; `wf`, what
comes next in a workflow: see soloist.workflow). Empty `args`, `kwargs` and `opts` are
left out: a missing one reads as empty.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import DecodeError, LimitExceeded, MessageTooLarge
from .serializers import Codec

PROTOCOL = 1
#: Deepest nesting of lists and maps allowed in arguments.
DEFAULT_MAX_DEPTH = 32
_NESTING = (list, tuple, dict)
#: Types that never nest, looked up before `isinstance`: an `isinstance` that fails reads
#: the object's `__class__` first, so a scalar tested against _NESTING costs about as much
#: as the rest of a producer's walk.
_FLAT = frozenset({str, int, float, bool, type(None), bytes})


def depth(obj: Any, limit: int) -> int:
    """How deeply lists, tuples and maps nest in `obj` (a scalar is 0), without recursion;
    `limit + 1` as soon as it is deeper than `limit` (so an argument that contains itself
    is measured, not walked forever)."""
    if type(obj) in _FLAT or not isinstance(obj, _NESTING):
        return 0
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, level = stack.pop()
        if level > deepest:
            deepest = level
            if level > limit:
                return level
        for child in item.values() if isinstance(item, dict) else item:
            # (scalars cannot nest deeper)
            if type(child) not in _FLAT and isinstance(child, _NESTING):
                stack.append((child, level + 1))
    return deepest


def _flat(args: Any, kwargs: Any) -> bool:
    """Whether no argument is a container: the common call, with nothing to walk."""
    for arg in args:
        if type(arg) not in _FLAT:
            return False
    if kwargs:
        for arg in kwargs.values():
            if type(arg) not in _FLAT:
                return False
    return True


def nesting(args: Any, kwargs: Any, limit: int) -> int:
    """How deeply a call's arguments nest (scalar arguments are one level); `limit + 1` as
    soon as they are deeper than `limit`."""
    return 1 if _flat(args, kwargs) else depth((args, kwargs), limit + 1) - 1


def new_id() -> str:
    """A task id: the microseconds since the epoch (14 hex digits) then 72 random bits (18),
    so that ids sort in the order they were made. A store keyed by task id then adds each
    record at the end of its index, a page it already holds, instead of on a page at random
    (SQLite: 5 µs of a record's 16, and a batch of 100 records writes a page or two, not 100)."""
    return ((time.time_ns() // 1000).to_bytes(7, "big") + os.urandom(9)).hex()


def _sent_now() -> float:
    """The unix time to 10 µs, for `sent`: at most 15 significant digits, which a worker's
    float parser reads on its short path (a full-precision `time.time()` has 17, whose
    parse touches about 70 more lines of code on a cold worker's way to the task)."""
    return time.time_ns() // 10_000 / 100_000


# Not frozen: every task run decodes one, and frozen dataclasses cost 3x as much to make.
@dataclass(slots=True)
class Message:
    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    sent: float = field(default_factory=_sent_now)
    options: dict[str, Any] = field(default_factory=dict)

    def encode(
        self, codec: Codec, max_size: int | None = None, max_depth: int = DEFAULT_MAX_DEPTH
    ) -> bytes:
        """Serialize; raise `MessageTooLarge` past `max_size` bytes and `LimitExceeded`
        for arguments nested deeper than `max_depth`."""
        if (self.args or self.kwargs) and nesting(self.args, self.kwargs, max_depth) > max_depth:
            raise LimitExceeded(
                f"arguments of {self.task} nest deeper than the limit of {max_depth}"
                " (or contain themselves)"
            )
        envelope: dict[str, Any] = {"v": PROTOCOL, "id": self.id, "task": self.task}
        if self.args:
            envelope["args"] = list(self.args)
        if self.kwargs:
            envelope["kwargs"] = self.kwargs
        envelope["sent"] = self.sent
        if self.options:
            envelope["opts"] = self.options
        try:
            body = codec.dumps(envelope)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(self._unencodable(codec, exc)) from None
        if max_size is not None and len(body) > max_size:
            raise MessageTooLarge(
                f"message for {self.task} is {len(body)} bytes, over the limit of {max_size}"
            )
        return body

    def _unencodable(self, codec: Codec, error: Exception) -> str:
        """Which argument the codec could not encode, and its type (the slow path of an
        error: each argument is tried alone)."""
        named = [f"argument {i}" for i in range(len(self.args))]
        named += [f"keyword argument {k!r}" for k in self.kwargs]
        for name, value in zip(named, [*self.args, *self.kwargs.values()], strict=True):
            try:
                codec.dumps(value)
            except (TypeError, ValueError, OverflowError) as exc:
                return (
                    f"{name} of {self.task} is a {type(value).__name__}, which "
                    f"{codec.serializer.name} cannot encode: {exc}"
                )
        return f"the call of {self.task} cannot be encoded with {codec.serializer.name}: {error}"

    @classmethod
    def decode(cls, body: bytes, codec: Codec, max_depth: int = DEFAULT_MAX_DEPTH) -> Message:
        """Parse and validate a body; raise `DecodeError` with the reason otherwise."""
        data = codec.loads(body)
        if not isinstance(data, dict):
            raise DecodeError(f"envelope is a {type(data).__name__}, not a map")
        get = data.get
        if get("v") != PROTOCOL:
            raise DecodeError(f"unsupported protocol version {get('v')!r}")
        task, msg_id = get("task"), get("id")
        if not isinstance(task, str) or not task:
            raise DecodeError("envelope has no task name")
        if not isinstance(msg_id, str) or not msg_id:
            raise DecodeError("envelope has no task id")
        # Each missing part reads as empty (a fresh map each: a task may change its own).
        args, kwargs, sent, opts = get("args", ()), get("kwargs"), get("sent", 0.0), get("opts")
        if kwargs is None:
            kwargs = {}
        if opts is None:
            opts = {}
        if not isinstance(args, (list, tuple)):
            raise DecodeError("args is not a list", task, msg_id)
        if not isinstance(kwargs, dict) or (
            kwargs and body[:1] != b"j" and not all(isinstance(k, str) for k in kwargs)
        ):  # (keys of a JSON map are always strings)
            raise DecodeError("kwargs is not a map of names", task, msg_id)
        # (float first: each type an isinstance tries in vain costs a __class__ lookup)
        if not isinstance(sent, (float, int)) or not isinstance(opts, dict):
            raise DecodeError("malformed sent time or options", task, msg_id)
        # Scalar arguments need no walk; nor, in JSON, where every level opens with a
        # bracket, a body with few of them (brackets inside strings only add to the count).
        shallow = (
            not (args or kwargs)
            or _flat(args, kwargs)
            or (body[:1] == b"j" and body.count(b"[") + body.count(b"{") <= max_depth)
        )
        if not shallow and depth((args, kwargs), max_depth + 1) - 1 > max_depth:
            raise DecodeError(f"arguments nest deeper than the limit of {max_depth}", task, msg_id)
        return cls(task, tuple(args), kwargs, msg_id, float(sent), opts)
