"""Serializers for message envelopes: json (default), msgpack, and pickle only when enabled.

A serialized body starts with one tag byte naming its serializer, so a worker can refuse a
pickle body *before* running the unpickler on it.
"""

from __future__ import annotations

import json
import json.encoder
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
_json_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_json_encode = _json_encoder.encode
#: The C encoder that `encode` makes anew on each call, made once: the same text for a
#: third less work on an envelope (callgrind: 33,000 -> 23,000 instructions). It keeps no
#: map of the containers it is inside, so one holding itself ends in RecursionError, not
#: ValueError.
_json_chunks = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None,
        _json_encoder.default,
        json.encoder.encode_basestring,
        None,
        ":",
        ",",
        False,
        False,
        True,
    )
    if json.encoder.c_make_encoder is not None  # type: ignore[attr-defined]
    else None
)
#: The decoder's C scanner itself (`raw_decode` is a Python wrapper around it).
_json_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _json_dumps(obj: Any) -> bytes:
    if _json_chunks is None:  # pragma: no cover - CPython always has the C encoder
        return _json_encode(obj).encode()
    return "".join(_json_chunks(obj, 0)).encode()


def _json_loads(body: bytes) -> Any:
    """`json.loads` of a tagged body at a third of its cost (every task run decodes one):
    one UTF-8 decode instead of an encoding sniff, and the scanner starts past the tag."""
    text = body.decode()
    try:
        obj, end = _json_scan(text, 1)
    except (StopIteration, ValueError):  # nothing at 1 (whitespace, say), or malformed:
        return json.loads(text[1:])  # json.loads words the error well
    if end != len(text) and text[end:].strip(" \t\n\r"):
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


def get(name: str) -> Serializer:
    """The serializer called `name`."""
    if name == "json":
        return JSON
    if name == "msgpack":
        return _msgpack()
    if name == "pickle":
        return PICKLE
    raise ConfigurationError(f"unknown serializer {name!r} (choose json, msgpack or pickle)")


def _msgpack_loads(body: bytes) -> Any:
    return _msgpack().loads(body)  # imported on the first msgpack body


class Codec:
    """Dumps with one serializer and loads any tagged body whose serializer is accepted."""

    def __init__(self, serializer: str = "json", accept_pickle: bool = False) -> None:
        self.serializer = get(serializer)
        if self.serializer is PICKLE and not accept_pickle:
            raise ConfigurationError("the pickle serializer needs accept_pickle=True")
        self.accept_pickle = accept_pickle
        #: The loader of each accepted tag: one lookup per body.
        self._loaders: dict[bytes, Callable[[bytes], Any]] = {
            JSON.tag: JSON.loads,
            b"m": _msgpack_loads,
        }
        if accept_pickle:
            self._loaders[PICKLE.tag] = PICKLE.loads

    def dumps(self, obj: Any) -> bytes:
        return self.serializer.tag + self.serializer.dumps(obj)

    def loads(self, body: bytes) -> Any:
        loader = self._loaders.get(body[:1])
        if loader is None:
            tag = body[:1]
            if tag == PICKLE.tag:
                raise DecodeError("pickle body refused (pickle is not enabled on this worker)")
            raise DecodeError(f"unknown serializer tag {tag!r}")
        try:
            return loader(body)
        except Exception as exc:
            raise DecodeError(f"cannot decode body: {type(exc).__name__}: {exc}") from None
