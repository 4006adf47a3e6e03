"""An app traced with OpenTelemetry for a real worker process (tests/test_otel_worker.py):
its spans are written one JSON object a line to the file SOLOIST_TEST_SPANS names."""

from __future__ import annotations

import os

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from soloist import App
from soloist.contrib.otel import instrument

app = App()
provider = TracerProvider()


def _line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"


if os.environ.get("SOLOIST_TEST_SPANS"):
    out = open(os.environ["SOLOIST_TEST_SPANS"], "a")  # noqa: SIM115  # open for the process's life
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=_line)))
instrument(app, provider)


@app.task(name="otel.double")
def double(x: int) -> int:
    return x * 2
