"""Results kept in this process's memory, for tests and eager mode."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from .base import FINAL_STATES, REVOKED, ResultStore, Revocation


class MemoryResultStore(ResultStore):
    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        # Held through its own (C) context manager: the Condition's is Python-level.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        #: Callers of `wait` waiting on `_cond`: with none, a write has nobody to wake.
        self._waiting = 0
        self._records: dict[str, tuple[str, bytes, float]] = {}
        #: task id -> (revoked at, expires at, terminate)
        self._revoked: dict[str, tuple[float, float, bool]] = {}
        #: chord id -> (member index -> record, the completing index or -1, expires at)
        self._chords: dict[str, tuple[dict[int, bytes], int, float]] = {}
        #: Coordination state: key -> (value, expires at); rate key -> token times;
        #: slot key -> {holder: expires at}.
        self._values: dict[str, tuple[str, float]] = {}
        self._tokens: dict[str, list[float]] = {}
        self._slots: dict[str, dict[str, float]] = {}

    def put(self, task_id: str, state: str, body: bytes, ttl: float) -> bool:
        with self._lock:
            old = self._records.get(task_id)
            if old is not None and old[0] in FINAL_STATES and old[2] > time.time():
                return False
            self._records[task_id] = (state, body, time.time() + ttl)
            if self._waiting:
                self._cond.notify_all()
            return True

    def put_new(self, task_id: str, state: str, body: bytes, ttl: float) -> bool:
        with self._lock:
            return self.get(task_id) is None and self.put(task_id, state, body, ttl)

    def get(self, task_id: str) -> tuple[str, bytes] | None:
        with self._lock:
            rec = self._records.get(task_id)
            if rec is None or rec[2] <= time.time():
                return None
            return rec[0], rec[1]

    def wait(self, task_id: str, timeout: float | None) -> tuple[str, bytes] | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                rec = self.get(task_id)
                if rec is not None and rec[0] in FINAL_STATES:
                    return rec
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return rec
                self._waiting += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._waiting -= 1

    def revoke(self, task_id: str, body: bytes, ttl: float, terminate: bool = False) -> bool:
        with self._lock:
            now = time.time()
            old = self.get(task_id)
            if old is not None and old[0] in FINAL_STATES and old[0] != REVOKED:
                return False
            self._records[task_id] = (REVOKED, body, now + ttl)
            self._revoked[task_id] = (now, now + ttl, terminate)
            if self._waiting:
                self._cond.notify_all()
            return True

    def revoked_since(self, since: float) -> list[Revocation]:
        now = time.time()
        with self._lock:
            live = [
                Revocation(tid, at, terminate)
                for tid, (at, exp, terminate) in self._revoked.items()
                if at >= since and exp > now
            ]
        return sorted(live, key=lambda r: r.at)

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._records.pop(task_id, None)

    def forget_if(self, task_id: str, record: tuple[str, bytes]) -> bool:
        with self._lock:
            if self.get(task_id) != record:
                return False
            del self._records[task_id]
            return True

    def chord_add_many(
        self, items: Sequence[tuple[str, int, int, bytes]], ttl: float
    ) -> list[list[bytes] | None]:
        with self._lock:
            return [self._chord_add(*item, ttl) for item in items]

    def _chord_add(
        self, chord_id: str, index: int, size: int, record: bytes, ttl: float
    ) -> list[bytes] | None:
        now = time.time()
        members, last, expires = self._chords.get(chord_id, ({}, -1, 0.0))
        if expires <= now:
            members, last = {}, -1
        if index not in members:
            members[index] = record
            if len(members) == size:
                last = index
        self._chords[chord_id] = (members, last, now + ttl)
        return [members[i] for i in range(size)] if last == index else None

    def expire(self) -> int:
        now = time.time()
        with self._lock:
            old = [k for k, (_, _, exp) in self._records.items() if exp <= now]
            for key in old:
                del self._records[key]
            for key in [k for k, (_, exp, _) in self._revoked.items() if exp <= now]:
                del self._revoked[key]
            for key in [k for k, (_, _, exp) in self._chords.items() if exp <= now]:
                del self._chords[key]
            return len(old)

    # Coordination (see ResultStore): this process's own, for tests and eager mode.

    shared = False

    def claim(self, key: str, value: str, ttl: float) -> str | None:
        with self._lock:
            old = self.peek(key)
            if old is not None:
                return old
            self._values[key] = (value, time.time() + ttl)
            return None

    def swap(self, key: str, expected: str, value: str | None, ttl: float) -> bool:
        with self._lock:
            if self.peek(key) != expected:
                return False
            if value is None:
                del self._values[key]
            else:
                self._values[key] = (value, time.time() + ttl)
            return True

    def set_value(self, key: str, value: str, ttl: float) -> None:
        with self._lock:
            self._values[key] = (value, time.time() + ttl)

    def peek(self, key: str) -> str | None:
        with self._lock:
            held = self._values.get(key)
            return held[0] if held is not None and held[1] > time.time() else None

    def take_token(self, key: str, limit: int, per: float) -> float:
        now = time.time()
        with self._lock:
            taken = [t for t in self._tokens.get(key, ()) if t > now - per]
            self._tokens[key] = taken
            if len(taken) < limit:
                taken.append(now)
                return 0.0
            return max(taken[-limit] + per - now, 1e-3)

    def acquire_slot(self, key: str, holder: str, limit: int, ttl: float) -> bool:
        now = time.time()
        with self._lock:
            live = {h: exp for h, exp in self._slots.get(key, {}).items() if exp > now}
            self._slots[key] = live
            if holder not in live and len(live) >= limit:
                return False
            live[holder] = now + ttl
            return True

    def renew_slots(self, slots: Sequence[tuple[str, str]], ttl: float) -> None:
        now = time.time()
        with self._lock:
            for key, holder in slots:
                live = self._slots.get(key, {})
                if live.get(holder, 0) > now:
                    live[holder] = now + ttl

    def release_slot(self, key: str, holder: str) -> None:
        with self._lock:
            self._slots.get(key, {}).pop(holder, None)
