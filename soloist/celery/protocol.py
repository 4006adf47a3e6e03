"""Celery's task messages as kombu puts them on Redis: decoding protocol v2 (and v1).

A kombu message is a JSON envelope: `body` (base64 of the serialized body when
`properties.body_encoding` is `base64`), `content-type`, `content-encoding`, `headers`
and `properties` (`delivery_tag`, `delivery_info` {exchange, routing_key}, `priority`,
`correlation_id`, `reply_to`). Protocol v2 keeps the task's metadata in the headers
(task, id, retries, eta, expires, timelimit, root_id, parent_id, group, argsrepr, …) and
`[args, kwargs, embed]` in the body, where embed is the canvas: callbacks, errbacks,
chain, chord. Protocol v1 (Celery 3) has everything in the body, a map.

The request built here is the map Celery's own worker hands its tracer, so a task sees
the same `self.request` on a Soloist worker as on a Celery one.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from kombu.exceptions import ContentDisallowed
from kombu.exceptions import DecodeError as KombuDecodeError
from kombu.serialization import loads as kombu_loads

from ..errors import DecodeError


@dataclass(slots=True)
class CeleryCall:
    """One task call decoded from a Celery message."""

    id: str
    task: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    #: What Celery's tracer takes as the request: headers, delivery info, canvas.
    request: dict[str, Any]
    #: Unix times, or None.
    eta: float | None
    expires: float | None
    #: Per-call (hard, soft) time limits from `apply_async(time_limit=…)`.
    timelimit: tuple[float | None, float | None]


def envelope(raw: bytes) -> dict[str, Any]:
    """The kombu envelope of a message; DecodeError if it is not one."""
    try:
        env = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not a kombu message (bad JSON: {exc})") from None
    if not isinstance(env, dict) or not isinstance(env.get("properties"), dict):
        raise DecodeError("not a kombu message (no properties)")
    return env


def body(env: dict[str, Any], accept: Collection[str]) -> Any:
    """The deserialized body of a kombu envelope; DecodeError says why it cannot be."""
    data = env.get("body")
    props = env["properties"]
    try:
        if props.get("body_encoding") == "base64":
            data = base64.b64decode(data or b"")
        return kombu_loads(
            data, env.get("content-type"), env.get("content-encoding", "utf-8"), accept=accept
        )
    except ContentDisallowed as exc:
        raise DecodeError(f"content type refused by the app's accept_content: {exc}") from None
    except (KombuDecodeError, binascii.Error, TypeError, ValueError) as exc:
        raise DecodeError(f"undecodable body: {exc}") from None


def when(value: Any) -> float | None:
    """An ISO 8601 time (naive means UTC, as Celery sends them) as a unix time."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise DecodeError(f"bad time {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def eta_of(raw: bytes) -> float | None:
    """The ETA of a message: from the headers (protocol 2), or from a JSON body
    (protocol 1); None if it has none or cannot be read (the task runner then says why)."""
    try:
        env = json.loads(raw)
        headers = env.get("headers") or {}
        if headers.get("task"):
            return when(headers.get("eta"))
        if env.get("content-type") == "application/json":
            v1 = body(env, ("application/json",))
            return when(v1.get("eta")) if isinstance(v1, dict) else None
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError, DecodeError):
        pass
    return None


def decode(raw: bytes, accept: Collection[str]) -> CeleryCall:
    """Decode a kombu message carrying a Celery task; DecodeError says why it cannot be."""
    env = envelope(raw)
    headers = env.get("headers") or {}
    if not isinstance(headers, dict):
        raise DecodeError("headers are not a map")
    payload = body(env, accept)
    if headers.get("task"):
        if not isinstance(payload, (list, tuple)) or len(payload) != 3:
            raise DecodeError("protocol 2 body is not [args, kwargs, embed]")
        args, kwargs, embed = payload
        request = dict(headers)
    elif isinstance(payload, dict) and payload.get("task"):
        args, kwargs, request, embed = _from_v1(payload)
    else:
        raise DecodeError("no task name in headers (protocol 2) or body (protocol 1)")
    if not isinstance(args, (list, tuple)):
        raise DecodeError("args is not a list")
    if not isinstance(kwargs, dict):
        raise DecodeError("kwargs is not a map")
    task_id, name = request.get("id"), request.get("task")
    if not isinstance(task_id, str) or not task_id or not isinstance(name, str):
        raise DecodeError("message has no task id")
    props = env["properties"]
    info = props.get("delivery_info") or {}
    request.update(
        properties=props,
        reply_to=props.get("reply_to"),
        correlation_id=props.get("correlation_id"),
        delivery_info={
            "exchange": info.get("exchange"),
            "routing_key": info.get("routing_key"),
            "priority": props.get("priority"),
            "redelivered": info.get("redelivered", False),
        },
        args=args,
        kwargs=kwargs,
        is_eager=False,
    )
    request.update(embed or {})
    hard, soft = [*(request.get("timelimit") or ()), None, None][:2]
    return CeleryCall(
        task_id,
        name,
        tuple(args),
        kwargs,
        request,
        when(request.get("eta")),
        when(request.get("expires")),
        (hard, soft),
    )


def _from_v1(body: dict[str, Any]) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """Protocol 1's body map as protocol 2's (args, kwargs, headers, embed)."""
    request = {
        "task": body["task"],
        "id": body.get("id"),
        "retries": body.get("retries", 0),
        "eta": body.get("eta"),
        "expires": body.get("expires"),
        "timelimit": body.get("timelimit") or (None, None),
        "group": body.get("taskset"),
    }
    embed = {
        "callbacks": body.get("callbacks"),
        "errbacks": body.get("errbacks"),
        "chord": body.get("chord"),
        "chain": None,
    }
    return body.get("args", ()), body.get("kwargs", {}), request, embed
