"""OpenTelemetry across processes: the trace a producer starts is continued by a real
`soloist worker` process, read from the message's trace option (W3C traceparent)."""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from soloist import App
from soloist.contrib.otel import instrument
from tests.conftest import WorkerProcesses


def test_a_worker_process_continues_the_producers_trace(
    workers: WorkerProcesses, sqlite_url: str, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    producer = App(sqlite_url, sqlite_url)
    instrument(producer, provider)
    with provider.get_tracer("test").start_as_current_span("request") as request:
        result = producer.send_task("otel.double", (21,))
    (publish,) = [s for s in exporter.get_finished_spans() if s.name == "publish default"]
    assert publish.kind == SpanKind.PRODUCER

    spans = tmp_path / "spans.jsonl"
    workers.env["SOLOIST_TEST_SPANS"] = str(spans)
    done = workers.run("worker", "-A", "tests.support.otel_worker_app:app", "--burst")
    assert done.returncode == 0, done.stdout + done.stderr
    assert result.get(timeout=5) == 42
    (process,) = [json.loads(line) for line in spans.read_text().splitlines()]
    assert process["name"] == "process default"
    assert process["kind"] == "SpanKind.CONSUMER"
    assert process["context"]["trace_id"] == f"0x{request.get_span_context().trace_id:032x}"
    assert process["parent_id"] == f"0x{publish.context.span_id:016x}"
    assert process["attributes"]["messaging.message.id"] == result.id
    assert process["attributes"]["soloist.outcome"] == "succeeded"
    producer.close()
