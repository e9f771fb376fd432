"""Encryption at emit (the default): the outbox row holds only the JWE; at relay: the transform seals."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

import outbox
from outbox import emit, outbox_table
from outbox import migrate as outbox_migrate
from outbox.crypto import PolicyError, producer_crypto
from outbox.envelope import JOSE_CONTENT_TYPE, JSON_CONTENT_TYPE, Envelope
from tests.outbox.crypto_helpers import make_world
from tests.outbox.models import Base, Customer

CANARY = "canary.7f3a@example.com"


@pytest.fixture
def engine(database_url):
    outbox_migrate.upgrade(outbox_migrate.standalone_config(database_url))
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


def test_emit_time_encryption_leaves_no_plaintext_in_the_outbox_table(engine, world):
    outbox.configure(source="/shop", sealer=world.sealer())
    with Session(engine) as session:
        customer = Customer(email=CANARY)
        session.add(customer)
        emit(session, "shop.customer.registered", customer)
        session.commit()
        customer_id = customer.id

    with engine.connect() as conn:
        [row] = conn.execute(select(outbox_table)).all()
        # Every column of every row, as the database returns it: no trace of the address.
        dump = repr(conn.execute(text(f"SELECT * FROM {outbox_table.name}")).all())
    assert CANARY not in dump and CANARY.encode() not in bytes(row.payload)
    assert row.content_type == JOSE_CONTENT_TYPE
    envelope = Envelope.from_row(row)
    opened = world.opener("crm").open(envelope)
    assert json.loads(opened.data) == {"id": customer_id, "email": CANARY}


def test_emit_refuses_a_type_with_no_policy_at_the_call(sqlite_url, world):
    outbox_migrate.upgrade(outbox_migrate.standalone_config(sqlite_url))
    engine = create_engine(sqlite_url)
    outbox.configure(source="/shop", sealer=world.sealer())
    with Session(engine) as session, pytest.raises(PolicyError, match="shop.refund.issued"):
        emit(session, "shop.refund.issued", aggregate="refund", data={"amount": 3})
    engine.dispose()


def test_encrypt_at_relay_keeps_the_row_plain_and_the_transform_seals(sqlite_url, world):
    outbox_migrate.upgrade(outbox_migrate.standalone_config(sqlite_url))
    engine = create_engine(sqlite_url)
    crypto = producer_crypto("relay", world.keys, world.policy_path)
    outbox.configure(source="/shop", sealer=crypto.sealer)
    with Session(engine) as session:
        emit(session, "shop.order.created", aggregate="order", key="7", data={"email": CANARY})
        emit(session, "shop.heartbeat", aggregate="heartbeat", data={"ok": True})
        with pytest.raises(PolicyError):
            emit(session, "shop.refund.issued", aggregate="refund", data={})
        session.commit()
    with engine.connect() as conn:
        order_row, heartbeat_row = conn.execute(select(outbox_table).order_by(outbox_table.c.position)).all()
    engine.dispose()
    assert order_row.content_type == JSON_CONTENT_TYPE and CANARY.encode() in order_row.payload

    published = crypto.envelope_transform(Envelope.from_row(order_row))
    assert published.datacontenttype == JOSE_CONTENT_TYPE and CANARY.encode() not in published.data
    assert json.loads(world.opener("billing").open(published).data) == {"email": CANARY}
    heartbeat = Envelope.from_row(heartbeat_row)
    assert crypto.envelope_transform(heartbeat) is heartbeat  # plaintext allowed: untouched
    assert crypto.envelope_transform(published) is published  # already sealed: untouched


def test_encrypt_at_emit_has_no_relay_transform_and_off_has_neither(world):
    assert producer_crypto("emit", world.keys, world.policy_path).envelope_transform is None
    off = producer_crypto("off", world.keys, world.policy_path)
    assert off.sealer is None and off.envelope_transform is None
    with pytest.raises(ValueError, match="encrypt_at"):
        producer_crypto("later", world.keys, world.policy_path)
