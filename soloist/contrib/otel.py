"""OpenTelemetry tracing (extra `soloist[otel]`): `instrument(app)`.

Every publish is a PRODUCER span ("publish <queue>") whose context travels in the message
(the `trace` option, W3C traceparent by default: the globally configured propagator), and
every task run is a CONSUMER span ("process <queue>") that continues that trace, with the
messaging attributes of OpenTelemetry's semantic conventions. The run's span is current
while the task runs (solo and threads pools), so spans the task opens are its children; in
the processes pool the task runs in a child process, which this does not reach.

Built on the app's hooks: a process that does not call `instrument` pays nothing, one that
does pays for the spans and one `trace` entry in each message's options.
"""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ..app import App
from ..brokers.base import Delivery
from ..execution import Outcome
from ..message import Message

#: The message option carrying the producer's trace context.
OPTION = "trace"
SYSTEM = "soloist"
#: Outcome events that end a run's span, and whether they are an error.
_ENDINGS = {
    "task_succeeded": False,
    "task_retried": False,
    "task_revoked": False,
    "task_failed": True,
}


def _attributes(queue: str, message: Message, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": queue,
        "messaging.message.id": message.id,
        "soloist.task.name": message.task,
    }


def instrument(app: App, tracer_provider: trace.TracerProvider | None = None) -> None:
    """Trace `app`'s publishes (in producers) and task runs (in workers)."""
    tracer = trace.get_tracer("soloist", tracer_provider=tracer_provider)
    publishing: dict[str, Span] = {}
    # delivery id -> the run's span, the context token, the thread that attached it
    running: dict[str, tuple[Span, object, int]] = {}
    lock = threading.Lock()

    @app.hooks.on("before_publish")
    def _publish(event: str, *, message: Message, queue: str, **info: Any) -> None:
        span = tracer.start_span(
            f"publish {queue}", kind=SpanKind.PRODUCER,
            attributes=_attributes(queue, message, "publish"),
        )  # fmt: skip
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        message.options[OPTION] = carrier
        with lock:
            publishing[message.id] = span

    @app.hooks.on("after_publish")
    def _published(event: str, *, message: Message, error: BaseException | None, **i: Any) -> None:
        with lock:
            span = publishing.pop(message.id, None)
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end()

    @app.hooks.on("task_started")
    def _started(event: str, *, delivery: Delivery, message: Message, **info: Any) -> None:
        carrier = message.options.get(OPTION)
        parent = propagate.extract(carrier) if isinstance(carrier, dict) else None
        attributes = _attributes(delivery.queue, message, "process")
        attributes["messaging.message.delivery_count"] = delivery.delivery_count
        span = tracer.start_span(
            f"process {delivery.queue}", context=parent, kind=SpanKind.CONSUMER,
            attributes=attributes,
        )  # fmt: skip
        token = context.attach(trace.set_span_in_context(span))
        with lock:
            running[delivery.id] = (span, token, threading.get_ident())

    def _ended(event: str, *, delivery: Delivery, outcome: Outcome, **info: Any) -> None:
        with lock:
            entry = running.pop(delivery.id, None)
        if entry is None:
            return  # never started (revoked before it ran, say)
        span, token, thread = entry
        if thread == threading.get_ident():  # a context is detached where it was attached
            context.detach(token)  # type: ignore[arg-type]
        span.set_attribute("soloist.outcome", event.removeprefix("task_"))
        if _ENDINGS[event]:
            span.set_status(Status(StatusCode.ERROR, outcome.reason[:1000]))
        span.end()

    for event in _ENDINGS:
        app.hooks.on(event)(_ended)
