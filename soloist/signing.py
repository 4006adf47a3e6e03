"""Message signing: an HMAC over the body, checked by workers before anything is decoded.

A signed body is `S` + key id (4 bytes) + expiry (8 bytes, unix ms, big-endian) +
HMAC-SHA256 (32 bytes) over key id, expiry and the inner body, then the inner body itself.
The key id lets a worker that accepts several keys (rotation) pick the right one; the
expiry stops a captured message from being replayed for ever.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
from collections.abc import Sequence

from .errors import ConfigurationError, DecodeError

TAG = b"S"
_HEADER = struct.Struct(">4sQ32s")

#: How long a signature stays valid after the message is due (retries reuse the body).
DEFAULT_SIGNATURE_TTL = 7 * 24 * 3600.0


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"soloist-key-id:" + key).digest()[:4]


class Signer:
    """Signs with the first key; accepts any of `keys` (newest first, for rotation)."""

    def __init__(self, keys: Sequence[str | bytes], ttl: float = DEFAULT_SIGNATURE_TTL) -> None:
        encoded = [k.encode() if isinstance(k, str) else k for k in keys]
        if not encoded or any(len(k) < 16 for k in encoded):
            raise ConfigurationError("signing keys must be at least 16 bytes long")
        self._keys = {_key_id(k): k for k in reversed(encoded)}
        self._signing = encoded[0]
        self.ttl = ttl

    def sign(self, body: bytes, delay: float = 0.0) -> bytes:
        key_id = _key_id(self._signing)
        expires = int((time.time() + delay + self.ttl) * 1000)
        mac = hmac.new(self._signing, key_id + struct.pack(">Q", expires) + body, hashlib.sha256)
        return TAG + _HEADER.pack(key_id, expires, mac.digest()) + body

    def verify(self, signed: bytes) -> bytes:
        """The inner body, or `DecodeError` saying why the signature is not good."""
        if signed[:1] != TAG or len(signed) < 1 + _HEADER.size:
            raise DecodeError("unsigned message refused (this worker requires signatures)")
        key_id, expires, mac = _HEADER.unpack_from(signed, 1)
        body = signed[1 + _HEADER.size :]
        key = self._keys.get(key_id)
        if key is None:
            raise DecodeError("message signed with an unknown key")
        expected = hmac.new(key, key_id + struct.pack(">Q", expires) + body, hashlib.sha256)
        if not hmac.compare_digest(mac, expected.digest()):
            raise DecodeError("bad signature: the message was tampered with")
        if expires < time.time() * 1000:
            raise DecodeError("signature expired: refusing a replayed or stale message")
        return body


def from_setting(value: str | bytes | Sequence[str | bytes] | None) -> Signer | None:
    """A Signer from `App(signing_key=…)` or `SOLOIST_SIGNING_KEY` (comma-separated)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return Signer([k.strip() for k in value.split(",") if k.strip()])
    if isinstance(value, bytes):
        return Signer([value])
    return Signer(list(value))
