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


def _json_dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


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
        tag, payload = body[:1], body[1:]
        if tag == JSON.tag:
            loads = JSON.loads
        elif tag == b"m":
            loads = _msgpack().loads
        elif tag == PICKLE.tag:
            if not self.accept_pickle:
                raise DecodeError("pickle body refused (pickle is not enabled on this worker)")
            loads = PICKLE.loads
        else:
            raise DecodeError(f"unknown serializer tag {tag!r}")
        try:
            return loads(payload)
        except Exception as exc:
            raise DecodeError(f"cannot decode body: {type(exc).__name__}: {exc}") from None
