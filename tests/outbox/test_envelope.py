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


def test_an_envelope_built_from_columns_is_the_one_the_constructor_builds():
    """from_columns fills the fields in one step: it must set every field, and check as __init__ does."""
    import dataclasses

    time = dt.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)
    columns = Envelope.from_columns("e1", "/shop", "shop.x", "order", "7", time, memoryview(b"{}"),
                                    "application/json", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01;k=v")
    built = Envelope(id="e1", source="/shop", type="shop.x", subject="7", time=time, data=b"{}",
                     aggregatetype="order", partitionkey="7",
                     traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate="k=v")
    assert columns == built and hash(columns) == hash(built) and repr(columns) == repr(built)
    assert columns.attributes() == built.attributes()
    assert set(vars(columns)) == {field.name for field in dataclasses.fields(Envelope)}  # none left to a default
    with pytest.raises(dataclasses.FrozenInstanceError):
        columns.id = "other"
    with pytest.raises(EnvelopeError, match="'type'"):
        Envelope.from_columns("e1", "/shop", "", "order", "7", time, b"{}", "application/json", None)


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


def _event(data: bytes, content_type: str = "application/json") -> Envelope:
    return Envelope(id="e-1", source="/shop", type="shop.order.created", subject="7",
                    time=dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc), data=data,
                    datacontenttype=content_type, aggregatetype="order", partitionkey="7")


@pytest.mark.parametrize("data", [
    b'{"customer":"ann@example.com","total":"19.90","note":"caf\xc3\xa9 \\n"}',
    b'[1,2,3]',
    b'"just a string"',
    b'',
])
def test_the_json_line_is_the_structured_form_with_the_data_spliced_in(data):
    line = _event(data).to_json()
    assert b"\n" not in line
    assert json.loads(line) == _event(data).to_structured()
    assert Envelope.from_json(line) == _event(data)


def test_data_declared_json_that_does_not_parse_travels_as_base64_with_its_bytes_exact():
    line = _event(b'{"total": 19.9').to_json()
    assert "data_base64" in json.loads(line)
    assert Envelope.from_json(line).data == b'{"total": 19.9'


def test_json_data_with_line_breaks_is_written_on_one_line():
    line = _event(b'{\n  "total": "19.90"\n}').to_json()
    assert b"\n" not in line and json.loads(line)["data"] == {"total": "19.90"}


def test_with_data_is_the_event_the_constructor_builds_with_that_data():
    """The relay's seal swaps the data and its content type; every other attribute stays as it was."""
    import dataclasses

    base = Envelope.from_columns("e-1", "/shop", "shop.order.created", "order", "42",
                                 dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), b'{"a":1}',
                                 "application/json", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    sealed = base.with_data(b'{"ciphertext":"x"}', "application/jose+json")
    expected = dataclasses.replace(base, data=b'{"ciphertext":"x"}', datacontenttype="application/jose+json")
    assert sealed == expected
    assert sealed.attributes() == expected.attributes()
    assert sealed.to_json() == expected.to_json()
    assert base.data == b'{"a":1}' and base.attributes()["datacontenttype"] == "application/json"  # untouched


@pytest.mark.parametrize("data, content_type", [("text", "application/json"), (b"{}", ""), (b"{}", None)])
def test_with_data_refuses_what_the_constructor_refuses(data, content_type):
    base = Envelope(id="e-1", source="/shop", type="t", subject="1", time=dt.datetime.now(dt.timezone.utc), data=b"{}")
    with pytest.raises(EnvelopeError):
        base.with_data(data, content_type)
