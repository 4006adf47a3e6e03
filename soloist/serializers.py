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
    loads: Callable[[bytes], Any]


# One encoder for every call: json.dumps with options builds a new one each time.
_json_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _json_dumps(obj: Any) -> bytes:
    return _json_encode(obj).encode()


def _msgpack() -> Serializer:
    try:
        import msgpack
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "serializer 'msgpack' needs: pip install 'soloist[msgpack]'"
        ) from exc
    return Serializer(
        "msgpack", b"m", lambda o: msgpack.packb(o, use_bin_type=True), lambda b: msgpack.unpackb(b)
    )


JSON = Serializer("json", b"j", _json_dumps, json.loads)
_json_decoder = json.JSONDecoder()


def _json_loads_tagged(body: bytes) -> Any:
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


PICKLE = Serializer("pickle", b"p", pickle.dumps, pickle.loads)


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
        if tag == PICKLE.tag and not self.accept_pickle:
            raise DecodeError("pickle body refused (pickle is not enabled on this worker)")
        try:
            if tag == JSON.tag:
                return _json_loads_tagged(body)
            if tag == b"m":
                return _msgpack().loads(body[1:])
            if tag == PICKLE.tag:
                return PICKLE.loads(body[1:])
        except Exception as exc:
            raise DecodeError(f"cannot decode body: {type(exc).__name__}: {exc}") from None
        raise DecodeError(f"unknown serializer tag {tag!r}")
