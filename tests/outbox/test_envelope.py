"""The envelope of an outbox row is a valid CloudEvent that the official SDK reads back."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from outbox import Envelope, emit, outbox_table
from outbox import migrate as outbox_migrate
from outbox.envelope import EnvelopeError


@pytest.fixture
def row(sqlite_url):
    outbox_migrate.upgrade(outbox_migrate.standalone_config(sqlite_url))
    engine = create_engine(sqlite_url)
    with Session(engine) as session:
        emit(session, "shop.order.paid", aggregate="order", key=42, data={"amount": "42.00"})
        session.commit()
    with engine.connect() as conn:
        yield conn.execute(select(outbox_table)).one()
    engine.dispose()


def test_an_envelope_from_a_row_carries_every_attribute(row):
    event = Envelope.from_row(row)
    attrs = event.attributes()
    assert attrs["specversion"] == "1.0"
    assert attrs["id"] == row.id
    assert attrs["source"] == "/monolith"
    assert attrs["type"] == "shop.order.paid"
    assert attrs["subject"] == attrs["partitionkey"] == "42"
    assert attrs["aggregatetype"] == "order"
    assert attrs["datacontenttype"] == "application/json"
    assert attrs["time"].endswith("Z")
    assert json.loads(event.data) == {"amount": "42.00"}


def test_the_cloudevents_sdk_reads_the_structured_form(row):
    from cloudevents.core.formats.json import JSONFormat

    event = Envelope.from_row(row)
    sdk_event = JSONFormat().read(None, event.to_json())
    assert sdk_event.get_id() == event.id
    assert sdk_event.get_type() == "shop.order.paid"
    assert sdk_event.get_subject() == "42"
    assert sdk_event.get_extension("partitionkey") == "42"
    assert sdk_event.get_time() == event.time
    assert sdk_event.get_data() == {"amount": "42.00"}


def test_binary_data_travels_as_data_base64_and_round_trips():
    event = Envelope(
        id="e1", source="/shop", type="shop.x", subject="1",
        time=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), data=b"\x00jwe\xff",
        datacontenttype="application/jose+json", aggregatetype="x", partitionkey="1",
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    )
    doc = event.to_structured()
    assert "data" not in doc and doc["data_base64"] == "AGp3Zf8="
    assert Envelope.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"specversion": "1.0", "source": "/s", "type": "t"}, "'id' is required"),
        ({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "Bad-Name": "x"}, "lowercase"),
        ({"specversion": "0.3", "id": "1", "source": "/s", "type": "t"}, "specversion"),
        ({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "time": "yesterday"}, "RFC 3339"),
    ],
)
def test_invalid_attributes_are_refused(attrs, message):
    with pytest.raises(EnvelopeError, match=message):
        Envelope.from_attributes(attrs, b"{}")
