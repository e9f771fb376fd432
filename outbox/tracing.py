"""W3C trace context capture, a no-op unless OpenTelemetry is installed."""

from __future__ import annotations


def current_trace_context() -> tuple[str | None, str | None]:
    """Return ``(traceparent, tracestate)`` of the active span, or ``(None, None)``."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None, None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    tracestate = context.trace_state.to_header() if context.trace_state else None
    return traceparent, tracestate or None
