"""OpenTelemetry spans for the event flow, by the messaging semantic conventions; no-ops without OpenTelemetry.

One trace runs from the monolith's request to every consumer:

* ``emit`` records a ``create`` span (kind PRODUCER) for each event, as a
  child of the caller's active span, and stores its W3C context in the row
  (``tracingspancontext``). With only the API installed (no SDK) no span is
  recorded and the caller's active span context is stored, as before.
* The relay's ``send`` span (``send_span``, kind CLIENT, one per batch) links
  to every event's creation context; the event keeps carrying that creation
  context (``traceparent``/``tracestate``) in the message, per the router's
  CloudEvents binding, as the conventions ask.
* The consumer's ``process`` span (``process_span``, kind CONSUMER) is a child
  of the event's creation context, so the handler's own spans join the trace.

Attribute names follow the conventions: ``messaging.system``,
``messaging.operation.type``/``.name``, ``messaging.destination.name``,
``messaging.message.id``, ``messaging.consumer.group.name``,
``messaging.batch.message_count``; plus ``cloudevents.event_id`` and
``cloudevents.event_type``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

_TRACER_NAME = "strangler.outbox"
_otel: Any = None  # the opentelemetry.trace module, or False when it is not installed

#: ``messaging.system`` per router module (the conventions' names where they have one).
SYSTEMS = {"redis": "redis", "amqp": "rabbitmq", "nats": "nats", "mqtt": "mqtt", "file": "file"}


def _trace():
    global _otel
    if _otel is None:
        try:
            from opentelemetry import trace
        except ImportError:
            _otel = False
        else:
            _otel = trace
    return _otel or None


def _recording(trace) -> bool:
    """False when no tracer provider is set (only the API's proxy): every span would be a no-op.

    The relay's ``send`` span reads every event of the batch for its links and
    destination: a few µs per event that a relay with no tracing need not pay.
    """
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def _format(context) -> tuple[str | None, str | None]:
    if not context.is_valid:
        return None, None
    traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    tracestate = context.trace_state.to_header() if context.trace_state else None
    return traceparent, tracestate or None


def current_trace_context() -> tuple[str | None, str | None]:
    """Return ``(traceparent, tracestate)`` of the active span, or ``(None, None)``."""
    trace = _trace()
    if trace is None:
        return None, None
    return _format(trace.get_current_span().get_span_context())


def create_context(
    event_id: str, event_type: str, destination: str | None
) -> tuple[str | None, str | None]:
    """Record the ``create`` span of one event and return its ``(traceparent, tracestate)``.

    The span is a child of the caller's active span and ends at once: the
    event is created by the call; it is sent later, by the relay. Without an
    SDK tracer provider this returns the active span's context, or ``(None, None)``.
    """
    trace = _trace()
    if trace is None:
        return None, None
    attributes = {
        "messaging.system": "strangler",
        "messaging.operation.type": "create",
        "messaging.operation.name": "emit",
        "messaging.message.id": event_id,
        "cloudevents.event_id": event_id,
        "cloudevents.event_type": event_type,
    }
    if destination:
        attributes["messaging.destination.name"] = destination
    span = trace.get_tracer(_TRACER_NAME).start_span(
        f"create {destination or event_type}", kind=trace.SpanKind.PRODUCER, attributes=attributes
    )
    try:
        return _format(span.get_span_context())
    finally:
        span.end()


def parse_context(traceparent: str | None, tracestate: str | None = None):
    """Return the OpenTelemetry ``Context`` a W3C ``traceparent`` names, or None (also without OpenTelemetry)."""
    if not traceparent or _trace() is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    context = TraceContextTextMapPropagator().extract(carrier)
    span_context = _otel.get_current_span(context).get_span_context()
    return context if span_context.is_valid else None


def system_of(router: Any) -> str:
    """Return the ``messaging.system`` of a router object or URL."""
    if isinstance(router, str):
        scheme = router.split("://", 1)[0]
        return (
            SYSTEMS.get(scheme) or SYSTEMS.get(scheme[:-1]) or scheme or "strangler"
        )  # rediss, amqps, mqtts
    module = type(router).__module__.rsplit(".", 1)[-1]
    return SYSTEMS.get(module, module)


@contextlib.contextmanager
def send_span(
    envelopes: Sequence[Any],
    *,
    router: Any = None,
    system: str | None = None,
    destination: str | None = None,
) -> Iterator[Any]:
    """Run the publish of ``envelopes`` inside one ``send`` span linked to each event's creation context.

    ``router`` (the router object) gives ``messaging.system`` and, when every
    event goes to one place, ``messaging.destination.name``. Yields the span,
    or None without OpenTelemetry or with no tracer provider set.
    """
    trace = _trace()
    if trace is None or not envelopes or not _recording(trace):
        yield None
        return
    links = []
    for envelope in envelopes:
        context = parse_context(envelope.traceparent, envelope.tracestate)
        if context is not None:
            links.append(trace.Link(trace.get_current_span(context).get_span_context()))
    if destination is None and router is not None and hasattr(router, "destinations"):
        names = {router.destinations.for_event(e) for e in envelopes}
        destination = names.pop() if len(names) == 1 else None
    attributes = {
        "messaging.system": system or (system_of(router) if router is not None else "strangler"),
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.batch.message_count": len(envelopes),
    }
    if destination:
        attributes["messaging.destination.name"] = destination
    if len(envelopes) == 1:
        attributes["messaging.message.id"] = envelopes[0].id
        attributes["cloudevents.event_id"] = envelopes[0].id
        attributes["cloudevents.event_type"] = envelopes[0].type
    with trace.get_tracer(_TRACER_NAME).start_as_current_span(
        f"send {destination}" if destination else "send",
        kind=trace.SpanKind.CLIENT,
        links=links,
        attributes=attributes,
    ) as span:
        yield span


@contextlib.contextmanager
def process_span(
    envelope: Any, *, destination: str, group: str, system: str = "strangler"
) -> Iterator[Any]:
    """Run the handling of one event inside a ``process`` span continuing the event's creation context."""
    trace = _trace()
    if trace is None:
        yield None
        return
    parent = parse_context(envelope.traceparent, envelope.tracestate)
    links = (
        [trace.Link(trace.get_current_span(parent).get_span_context())]
        if parent is not None
        else []
    )
    attributes = {
        "messaging.system": system,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": destination,
        "messaging.consumer.group.name": group,
        "messaging.message.id": envelope.id,
        "cloudevents.event_id": envelope.id,
        "cloudevents.event_type": envelope.type,
        "cloudevents.event_source": envelope.source,
    }
    with trace.get_tracer(_TRACER_NAME).start_as_current_span(
        f"process {destination}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
    ) as span:
        yield span


def record_outcome(span: Any, outcome: str) -> None:
    """Set the consumer's outcome on a ``process`` span; dead and rejected events mark it as an error."""
    if span is None:
        return
    span.set_attribute("strangler.outcome", outcome)
    if outcome in ("dead", "rejected", "retry"):
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, outcome))
