"""Serializers for message envelopes: json (default), msgpack, and pickle only when enabled.

A serialized body starts with one tag byte naming its serializer, so a worker can refuse a
pickle body *before* running the unpickler on it.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError, DecodeError


@dataclass(frozen=True)
class Serializer:
    name: str
    tag: bytes
    dumps: Callable[[Any], bytes]
    #: Parses a whole tagged body, reading past the tag without copying the rest.
    loads: Callable[[bytes], Any]


# One encoder for every call: json.dumps with options builds a new one each time.
_json_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_json_decoder = json.JSONDecoder()


def _json_dumps(obj: Any) -> bytes:
    return _json_encode(obj).encode()


def _json_loads(body: bytes) -> Any:
    """`json.loads` of a tagged body at a third of its cost (every task run decodes one):
    one UTF-8 decode instead of an encoding sniff, and the scanner starts past the tag."""
    text = body.decode()
    try:
        obj, end = _json_decoder.raw_decode(text, 1)
    except ValueError:
        return json.loads(text[1:])  # leading whitespace, or an error that json words well
    if text[end:].strip(" \t\n\r"):
        raise ValueError(f"extra data at character {end}")
    return obj


def _msgpack() -> Serializer:
    try:
        import msgpack  # here: msgpack is an optional extra
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "serializer 'msgpack' needs: pip install 'soloist[msgpack]'"
        ) from exc
    return Serializer(
        "msgpack",
        b"m",
        lambda o: msgpack.packb(o, use_bin_type=True),
        lambda body: msgpack.unpackb(memoryview(body)[1:]),
    )


JSON = Serializer("json", b"j", _json_dumps, _json_loads)
PICKLE = Serializer("pickle", b"p", pickle.dumps, lambda body: pickle.loads(memoryview(body)[1:]))
_TAGS = (JSON.tag, b"m", PICKLE.tag)


def get(name: str) -> Serializer:
    """The serializer called `name`."""
    if name == "json":
        return JSON
    if name == "msgpack":
        return _msgpack()
    if name == "pickle":
        return PICKLE
    raise ConfigurationError(f"unknown serializer {name!r} (choose json, msgpack or pickle)")


class Codec:
    """Dumps with one serializer and loads any tagged body whose serializer is accepted."""

    def __init__(self, serializer: str = "json", accept_pickle: bool = False) -> None:
        self.serializer = get(serializer)
        if self.serializer is PICKLE and not accept_pickle:
            raise ConfigurationError("the pickle serializer needs accept_pickle=True")
        self.accept_pickle = accept_pickle

    def dumps(self, obj: Any) -> bytes:
        return self.serializer.tag + self.serializer.dumps(obj)

    def loads(self, body: bytes) -> Any:
        tag = body[:1]
        if tag not in _TAGS:
            raise DecodeError(f"unknown serializer tag {tag!r}")
        if tag == PICKLE.tag and not self.accept_pickle:
            raise DecodeError("pickle body refused (pickle is not enabled on this worker)")
        try:
            serializer = JSON if tag == JSON.tag else PICKLE if tag == PICKLE.tag else _msgpack()
            return serializer.loads(body)
        except Exception as exc:
            raise DecodeError(f"cannot decode body: {type(exc).__name__}: {exc}") from None
