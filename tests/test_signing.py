"""Signed messages: workers with a key refuse unsigned, tampered, foreign and expired ones."""

from __future__ import annotations

import time

import pytest

from soloist import App, ConfigurationError
from soloist.brokers.memory import MemoryBroker
from soloist.message import Message
from soloist.signing import Signer
from soloist.testing import drain

KEY = "k" * 32
OLD_KEY = "o" * 32


def make_app(broker: MemoryBroker, key: object) -> App:
    app = App(broker, "memory://", signing_key=key)  # type: ignore[arg-type]

    @app.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    return app


def test_signed_messages_run() -> None:
    app = make_app(MemoryBroker(), KEY)
    result = app.tasks["add"].delay(1, 2)
    drain(app)
    assert result.get(timeout=1) == 3


def test_bad_signatures_are_dead_lettered_before_decoding() -> None:
    broker = MemoryBroker()
    app = make_app(broker, KEY)
    plain = Message("add", (1, 2)).encode(app.codec)
    signed = app.encode(Message("add", (1, 2)))
    tampered = signed[:-3] + b"9]}" if signed.endswith(b"]}") else signed[:-1] + b"x"
    foreign = Signer(["f" * 32]).sign(plain)
    expired = Signer([KEY], ttl=-1).sign(plain)
    for body in (plain, tampered, foreign, expired):
        broker.publish("default", body)
    stats = drain(app)
    assert stats.done == 0 and stats.dead == 4
    reasons = [d.reason for d in broker.dead_letters("default")]
    assert "unsigned message refused" in reasons[0]
    assert "tampered" in reasons[1]
    assert "unknown key" in reasons[2]
    assert "expired" in reasons[3]


def test_key_rotation_accepts_the_old_key() -> None:
    broker = MemoryBroker()
    producer = make_app(broker, OLD_KEY)
    worker = make_app(broker, [KEY, OLD_KEY])
    result = producer.tasks["add"].delay(2, 2)
    drain(worker)
    assert worker.result(result.id).get(timeout=1) == 4


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLOIST_SIGNING_KEY", f"{KEY},{OLD_KEY}")
    app = App("memory://", "memory://")
    assert app.signer is not None
    assert app.signer.verify(Signer([OLD_KEY]).sign(b"j{}")) == b"j{}"


def test_short_keys_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        App("memory://", signing_key="short")


def test_delayed_messages_stay_valid_past_the_ttl() -> None:
    signer = Signer([KEY], ttl=0.2)
    signed = signer.sign(b"j{}", delay=5)
    time.sleep(0.3)
    assert signer.verify(signed) == b"j{}"
