"""OpenTelemetry: a span per publish and per task run, the trace carried in the message
from producer to worker (a real worker in this process, on SQLite), with the SDK's
in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from soloist import App
from soloist.contrib.otel import instrument
from soloist.errors import MessageTooLarge
from soloist.testing import drain


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[App, TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    url = f"sqlite:///{tmp_path}/otel.db"
    app = App(url, url, max_message_size=2000)
    instrument(app, provider)
    yield app, provider, exporter
    app.close()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_one_trace_from_producer_to_the_task(
    traced: tuple[App, TracerProvider, InMemorySpanExporter], pool: str
) -> None:
    app, provider, exporter = traced
    tracer = provider.get_tracer("test")

    @app.task(name="traced")
    def traced_task(x: int) -> int:
        with tracer.start_as_current_span("inside"):
            return x * 2

    with tracer.start_as_current_span("request") as request:
        result = traced_task.delay(21)
    drain(app, pool=pool)
    assert result.get(timeout=5) == 42
    spans = by_name(exporter.get_finished_spans())
    publish, process, inside = spans["publish default"], spans["process default"], spans["inside"]
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in (publish, process, inside)} == {trace_id}
    assert publish.kind == SpanKind.PRODUCER and process.kind == SpanKind.CONSUMER
    assert (
        publish.parent is not None and publish.parent.span_id == request.get_span_context().span_id
    )
    assert process.parent is not None and process.parent.span_id == publish.context.span_id
    assert inside.parent is not None and inside.parent.span_id == process.context.span_id
    assert publish.attributes is not None and process.attributes is not None
    assert publish.attributes["messaging.system"] == "soloist"
    assert publish.attributes["messaging.destination.name"] == "default"
    assert publish.attributes["messaging.operation.type"] == "publish"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.message.id"] == result.id
    assert process.attributes["soloist.task.name"] == "traced"
    assert process.attributes["soloist.outcome"] == "succeeded"
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached


def test_failures_are_errors(traced: tuple[App, TracerProvider, InMemorySpanExporter]) -> None:
    app, _, exporter = traced

    @app.task(name="broken", max_retries=0)
    def broken(pad: str = "") -> None:
        raise ValueError("no")

    broken.delay()
    with pytest.raises(MessageTooLarge):
        broken.delay("x" * 5000)
    drain(app)
    process = by_name(exporter.get_finished_spans())["process default"]
    assert process.status.status_code == StatusCode.ERROR and "ValueError" in str(
        process.status.description
    )
    publishes = [s for s in exporter.get_finished_spans() if s.name == "publish default"]
    assert [s.status.status_code for s in publishes] == [StatusCode.UNSET, StatusCode.ERROR]


def test_an_app_without_instrument_has_no_hooks() -> None:
    assert not App("memory://", "memory://").hooks.active
