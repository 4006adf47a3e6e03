"""Celery's canvas, sent by Celery's producer and run by Soloist workers: Celery's tracer
sends links and the next chain step, and completes chords on the Redis backend."""

from __future__ import annotations

import pytest

from tests.celery_compat.conftest import CeleryRig

pytest.importorskip("celery")


def sig(rig: CeleryRig, name: str, *args: object, immutable: bool = False) -> object:
    return rig.app.signature(f"tests.support.celery_sample.{name}", args, immutable=immutable)


def test_link_and_chain(rig: CeleryRig) -> None:
    from celery import chain

    rig.worker()
    linked = rig.send("add", 1, 2, link=sig(rig, "add", 10))
    assert linked.get(timeout=20) == 3
    rig.wait_for(lambda: linked.children is not None and len(linked.children) == 1,
                 what="the link was sent")  # fmt: skip
    assert linked.children[0].get(timeout=10) == 13
    flow = chain(sig(rig, "add", 1, 1), sig(rig, "add", 2), sig(rig, "shared_mul", 10))
    assert flow.apply_async().get(timeout=20) == 40


def test_link_error(rig: CeleryRig) -> None:
    rig.worker()
    failed = rig.send("fail", "nope", link_error=sig(rig, "on_error"))
    with pytest.raises(ValueError):
        failed.get(timeout=20)
    rig.wait_for(lambda: f"errback {failed.id} ValueError" in rig.lines(), what="the errback")


def test_group_and_chord_on_the_redis_backend(rig: CeleryRig) -> None:
    from celery import chord, group

    rig.worker()
    together = group(sig(rig, "add", i, i) for i in range(5)).apply_async()
    assert together.get(timeout=20) == [0, 2, 4, 6, 8]
    gathered = chord((sig(rig, "add", i, 1) for i in range(5)), sig(rig, "tsum"))
    assert gathered.apply_async().get(timeout=20) == 15
