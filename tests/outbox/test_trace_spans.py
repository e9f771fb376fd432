"""One OpenTelemetry trace from the monolith's request to each consumer, across real processes.

A writer process emits inside its request span, a relay process publishes,
two consumer processes handle; each records spans with the SDK's in-memory
exporter and writes them out. The spans must form one trace: request ▸
``create`` (per event) ▸ ``process`` (per consumer) ▸ the handler's own span,
with the relay's ``send`` span linked to each creation context, and carry
the attributes the messaging conventions name.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

import pytest
from sqlalchemy import create_engine

from outbox import inbox
from outbox.migrate import standalone_config, upgrade
from outbox.testing.services import require_module, service_url


@pytest.fixture(autouse=True)
def _tracing_extra():
    require_module("opentelemetry.sdk.trace", "tracing")

PROCESS = textwrap.dedent("""
    import json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from sqlalchemy import create_engine

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    role, db, router, aggregate, out = sys.argv[1:6]
    engine = create_engine(db)
    result = None
    if role == "writer":
        import outbox
        outbox.configure(source="/shop")
        with trace.get_tracer("shop").start_as_current_span("POST /orders", kind=trace.SpanKind.SERVER):
            with engine.begin() as conn:
                result = [outbox.emit(conn, "shop.order.created", aggregate=aggregate, key=n, data={"id": n})
                          for n in (1, 2)]
    elif role == "relay":
        from outbox.relay import Relay
        from outbox.routers import open_router
        r = open_router(router)
        Relay(engine, r).drain()
        r.close()
    else:
        from outbox.consumer import Consumer
        consumer = Consumer(role, engine)

        @consumer.handler("shop.order.created")
        def handle(event, session):
            with trace.get_tracer(role).start_as_current_span("handle order"):
                pass

        consumer.run(router, destinations=[aggregate], until_idle=True, install_signals=False, poll=0.5)
    provider.force_flush()
    spans = [
        {
            "name": s.name, "kind": s.kind.name, "trace_id": f"{s.context.trace_id:032x}",
            "span_id": f"{s.context.span_id:016x}",
            "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
            "attributes": dict(s.attributes), "links": [f"{l.context.span_id:016x}" for l in s.links],
        }
        for s in exporter.get_finished_spans()
    ]
    with open(out, "w") as handle:
        json.dump({"spans": spans, "result": result}, handle)
""")


def run(tmp_path, role, db, router, aggregate) -> dict:
    out = tmp_path / f"{role}.json"
    subprocess.run(
        [sys.executable, "-c", PROCESS, role, db, router, aggregate, str(out)],
        check=True,
        timeout=120,
    )
    return json.loads(out.read_text())


def router_for(kind: str, tmp_path):
    if kind == "file":
        return f"file://{tmp_path}/events", None
    url = service_url("redis")
    return url, url


@pytest.mark.parametrize("router_kind", ["file", "redis"])
def test_the_request_the_relay_and_every_consumer_share_one_trace(
    tmp_path, sqlite_url, router_kind
):
    upgrade(standalone_config(sqlite_url))
    router, redis_url = router_for(router_kind, tmp_path)
    aggregate = f"order_{uuid.uuid4().hex[:8]}"  # its own stream on a shared broker
    services = {}
    for name in ("billing", "shipping"):
        services[name] = f"sqlite:///{tmp_path}/{name}.db"
        inbox.upgrade(services[name])
    try:
        writer = run(tmp_path, "writer", sqlite_url, router, aggregate)
        relay = run(tmp_path, "relay", sqlite_url, router, aggregate)
        consumers = {
            name: run(tmp_path, name, url, router, aggregate) for name, url in services.items()
        }
    finally:
        if redis_url:
            import redis

            client = redis.Redis.from_url(redis_url)
            client.delete(aggregate)
            client.close()
        create_engine(sqlite_url).dispose()

    event_ids = writer["result"]
    (request,) = [s for s in writer["spans"] if s["name"] == "POST /orders"]
    creates = [
        s for s in writer["spans"] if s["attributes"].get("messaging.operation.type") == "create"
    ]
    assert len(creates) == 2
    for create, event_id in zip(creates, event_ids):
        assert (
            create["trace_id"] == request["trace_id"] and create["parent_id"] == request["span_id"]
        )
        assert create["kind"] == "PRODUCER" and create["name"] == f"create {aggregate}"
        assert create["attributes"]["messaging.message.id"] == event_id
        assert create["attributes"]["messaging.destination.name"] == aggregate
        assert create["attributes"]["messaging.system"] == "strangler"

    (send,) = [
        s for s in relay["spans"] if s["attributes"].get("messaging.operation.type") == "send"
    ]
    assert send["name"] == f"send {aggregate}" and send["kind"] == "CLIENT"
    assert sorted(send["links"]) == sorted(c["span_id"] for c in creates)
    assert send["attributes"]["messaging.system"] == router_kind
    assert send["attributes"]["messaging.destination.name"] == aggregate
    assert send["attributes"]["messaging.batch.message_count"] == 2

    create_of = {c["attributes"]["messaging.message.id"]: c for c in creates}
    for name, recorded in consumers.items():
        processes = [
            s
            for s in recorded["spans"]
            if s["attributes"].get("messaging.operation.type") == "process"
        ]
        assert sorted(p["attributes"]["messaging.message.id"] for p in processes) == sorted(
            event_ids
        )
        for process in processes:
            create = create_of[process["attributes"]["messaging.message.id"]]
            assert process["trace_id"] == request["trace_id"]
            assert process["parent_id"] == create["span_id"] and process["links"] == [
                create["span_id"]
            ]
            assert process["kind"] == "CONSUMER" and process["name"] == f"process {aggregate}"
            assert process["attributes"]["messaging.system"] == router_kind
            assert process["attributes"]["messaging.destination.name"] == aggregate
            assert process["attributes"]["messaging.consumer.group.name"] == name
            assert process["attributes"]["strangler.outcome"] == "handled"
        handler_spans = [s for s in recorded["spans"] if s["name"] == "handle order"]
        assert {s["parent_id"] for s in handler_spans} == {p["span_id"] for p in processes}


def test_without_an_sdk_emit_stores_the_active_span_and_adds_no_span(sqlite_url):
    from opentelemetry.sdk.trace import TracerProvider
    from sqlalchemy import select

    from outbox import emit
    from outbox.table import get_outbox_table

    upgrade(standalone_config(sqlite_url))
    engine = create_engine(sqlite_url)
    tracer = TracerProvider().get_tracer(
        "test"
    )  # a provider of its own; the global one stays the no-op
    with tracer.start_as_current_span("checkout") as span:
        with engine.begin() as conn:
            emit(conn, "shop.order.created", aggregate="order", data={"id": 1})
    with engine.connect() as conn:
        stored = conn.execute(select(get_outbox_table().c.tracingspancontext)).scalar_one()
    assert stored.split("-")[2] == f"{span.get_span_context().span_id:016x}"
    engine.dispose()


def test_send_span_links_each_event_and_is_a_no_op_without_events():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from outbox import tracing
    from outbox.envelope import Envelope

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    envelope = Envelope.from_structured(
        {
            "specversion": "1.0",
            "id": "e1",
            "source": "/shop",
            "type": "shop.order.created",
            "aggregatetype": "order",
            "traceparent": parent,
            "data": {},
        }
    )
    from opentelemetry import trace

    original = trace.get_tracer, trace.get_tracer_provider
    # This test's provider, not the global one.
    trace.get_tracer = lambda name, *a, **k: provider.get_tracer(name)
    trace.get_tracer_provider = lambda: provider
    try:
        with tracing.send_span([], system="redis") as nothing:
            assert nothing is None
        with tracing.send_span([envelope], system="redis", destination="order"):
            pass
        trace.get_tracer_provider = trace.ProxyTracerProvider  # none set: the span is skipped, not built
        with tracing.send_span([envelope], system="redis", destination="order") as skipped:
            assert skipped is None
    finally:
        trace.get_tracer, trace.get_tracer_provider = original
    (span,) = exporter.get_finished_spans()
    assert [f"{link.context.span_id:016x}" for link in span.links] == ["b7ad6b7169203331"]
    assert (
        span.attributes["messaging.message.id"] == "e1"
        and span.attributes["messaging.system"] == "redis"
    )
