"""Integrations with other libraries, each an optional extra: `otel` (OpenTelemetry)."""
