"""The message envelope and serializers, including hostile input."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soloist.errors import ConfigurationError, DecodeError, LimitExceeded, MessageTooLarge
from soloist.message import Message
from soloist.serializers import Codec


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_round_trip(serializer: str) -> None:
    codec = Codec(serializer)
    msg = Message("t", (1, "two", [3]), {"k": {"n": None}}, options={"ignore_result": True})
    assert Message.decode(msg.encode(codec), codec) == msg


class Items(list):  # type: ignore[type-arg]
    """A container whose type is not list's own."""


def nested(levels: int, box: type = list) -> object:
    value: object = 0
    for _ in range(levels):
        value = box([value])
    return value


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@pytest.mark.parametrize("box", [list, tuple, Items])
def test_depth_limit_counts_every_container_on_both_sides(serializer: str, box: type) -> None:
    """Scalar arguments skip the walk: a container of any kind, positional or keyword,
    among scalars, still counts, on the producer and on the worker."""
    codec = Codec(serializer)
    scalars = (1, 2.5, "s", True, None)
    ok = Message("t", (*scalars, nested(31, box)), {"k": "v"})
    assert Message.decode(ok.encode(codec, max_depth=32), codec, 32).args[:5] == scalars
    for args, kwargs in [((*scalars, nested(32, box)), {}), (scalars, {"k": nested(32, box)})]:
        message = Message("t", args, kwargs)
        with pytest.raises(LimitExceeded):
            message.encode(codec, max_depth=32)
        body = message.encode(codec, max_depth=33)
        with pytest.raises(DecodeError, match="deeper than the limit of 32"):
            Message.decode(body, codec, 32)
        assert Message.decode(body, codec, 33).id == message.id


def test_sent_is_the_time_in_at_most_15_significant_digits() -> None:
    """A worker's float parser reads such a number on its short path (a full-precision
    time.time() has 17 digits)."""
    for _ in range(50):
        before = time.time()
        sent = Message("t").sent
        assert before - 0.00001 <= sent <= time.time()
        assert len(repr(sent).replace(".", "").lstrip("0")) <= 15


def test_size_limit() -> None:
    with pytest.raises(MessageTooLarge):
        Message("t", ("x" * 100,)).encode(Codec(), max_size=50)


def test_pickle_is_refused_unless_enabled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    body = b"p" + pickle.dumps(Evil())
    with pytest.raises(DecodeError, match="pickle body refused"):
        Message.decode(body, Codec())
    assert not marker.exists()
    with pytest.raises(ConfigurationError):
        Codec("pickle")
    trusted = Codec("pickle", accept_pickle=True)
    msg = Message("t", (1,))
    assert Message.decode(msg.encode(trusted), trusted) == msg


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"j",
        b"jnull",
        b"j[]",
        b'j{"v":2}',
        b'j{"v":1}',
        b'j{"v":1,"task":"t"}',
        b'j{"v":1,"task":"t","id":"i","args":5}',
        b'j{"v":1,"task":"t","id":"i","kwargs":[]}',
        b'j{"v":1,"task":"t","id":"i","kwargs":{"1":2},"opts":7}',
        b"x{}",
        b"m\xc1",
    ],
)
def test_malformed_envelopes(body: bytes) -> None:
    with pytest.raises(DecodeError):
        Message.decode(body, Codec())


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_decode_error(body: bytes) -> None:
    with contextlib.suppress(DecodeError):
        Message.decode(body, Codec())


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_messages_decode_or_raise_decode_error(data: st.DataObject) -> None:
    body = bytearray(Message("add", (1, 2), {"x": "y"}, id="abc", sent=1.5).encode(Codec()))
    for _ in range(data.draw(st.integers(1, 5))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        Message.decode(bytes(body), Codec())


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text() | st.integers() | st.floats() | st.booleans(), inner, max_size=4),
    max_leaves=20,
)


@given(_JSON_VALUES)
@settings(max_examples=300, deadline=None)
def test_json_bodies_are_what_the_standard_encoder_writes(value: object) -> None:
    """The JSON codec calls the C encoder directly: its text is json.dumps's, tag aside."""
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert Codec("json").dumps(value) == b"j" + expected


def test_json_refuses_what_the_standard_encoder_refuses() -> None:
    for value in ({"x": object()}, {object(): 1}, {1, 2}):
        with pytest.raises(TypeError):
            Codec("json").dumps(value)
