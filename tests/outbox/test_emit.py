"""emit writes one outbox row in the caller's transaction: commit ⇒ event, rollback ⇒ none."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import multiprocessing
import sqlite3
import threading
import uuid

import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from outbox import EmitError, emit, outbox_table
from outbox import migrate as outbox_migrate
from outbox.testing.services import require_module
from tests.outbox.models import Base, Customer, Invoice, Money, Order, OrderLine, Status
from tests.outbox.writers import write_orders


@pytest.fixture
def engine(database_url):
    outbox_migrate.upgrade(outbox_migrate.standalone_config(database_url))
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def rows(engine):
    with engine.connect() as conn:
        return conn.execute(select(outbox_table).order_by(outbox_table.c.position)).all()


def payload(row):
    return json.loads(row.payload)


def test_commit_writes_the_event_with_the_generated_primary_key(engine):
    with Session(engine) as session:
        order = Order(total=decimal.Decimal("19.90"), status=Status.PAID)
        session.add(order)
        event_id = emit(session, "shop.order.created", order)
        assert rows(engine) == []  # nothing before the flush
        session.commit()
        order_id = order.id

    [row] = rows(engine)
    assert row.id == event_id
    assert row.type == "shop.order.created"
    assert row.aggregatetype == "order"
    assert row.aggregateid == str(order_id)
    assert row.content_type == "application/json"
    assert row.source == "/monolith"
    assert row.published_at is None and row.dead_at is None and row.attempts == 0
    assert payload(row) == {
        "id": order_id, "customer_id": None, "total": "19.90", "status": "paid", "placed_at": None,
    }


def test_rollback_leaves_no_event(engine):
    with Session(engine) as session:
        order = Order(total=decimal.Decimal("1.00"))
        session.add(order)
        emit(session, "shop.order.created", order)
        session.flush()
        session.rollback()
    assert rows(engine) == []


def test_pending_events_are_forgotten_after_rollback(engine):
    with Session(engine) as session:
        order = Order(total=decimal.Decimal("1.00"))
        session.add(order)
        emit(session, "shop.order.created", order)
        session.rollback()
        session.add(Customer(email="x@example.com"))
        session.commit()
    assert rows(engine) == []


def test_a_savepoint_rolled_back_takes_back_only_its_own_events(engine):
    with Session(engine) as session:
        taken = Customer(email="ann@example.com")
        session.add(taken)
        session.commit()
        kept = Order(total=decimal.Decimal("1.00"))
        session.add(kept)
        emit(session, "shop.order.created", kept)
        try:
            with session.begin_nested():
                duplicate = Customer(id=taken.id, email="bob@example.com")
                session.add(duplicate)
                emit(session, "shop.customer.created", duplicate)
                session.flush()  # the primary key is taken: the savepoint rolls back
        except Exception:
            pass
        with session.begin_nested():
            released = Order(total=decimal.Decimal("2.00"))
            session.add(released)
            emit(session, "shop.order.created", released)
        session.flush()
        expected = [("shop.order.created", str(kept.id)), ("shop.order.created", str(released.id))]
        session.commit()
    assert [(row.type, row.aggregateid) for row in rows(engine)] == expected


def test_a_savepoint_rolled_back_takes_back_the_events_of_savepoints_inside_it(engine):
    with Session(engine) as session:
        kept = Order(total=decimal.Decimal("1.00"))
        session.add(kept)
        emit(session, "shop.order.created", kept)
        outer = session.begin_nested()
        first = Order(total=decimal.Decimal("2.00"))
        session.add(first)
        emit(session, "shop.order.created", first)
        with session.begin_nested():
            second = Order(total=decimal.Decimal("3.00"))
            session.add(second)
            emit(session, "shop.order.created", second)
        outer.rollback()
        session.flush()
        expected = [("shop.order.created", str(kept.id))]
        session.commit()
    assert [(row.type, row.aggregateid) for row in rows(engine)] == expected


def test_rolling_back_the_transaction_takes_back_a_released_savepoints_events(engine):
    with Session(engine) as session:
        session.add(Customer(email="ann@example.com"))
        session.flush()  # the transaction is under way: the savepoint nests in it (pysqlite begins at the first write)
        with session.begin_nested():
            order = Order(total=decimal.Decimal("1.00"))
            session.add(order)
            emit(session, "shop.order.created", order)
        session.rollback()
        session.add(Customer(email="x@example.com"))
        session.commit()
    assert rows(engine) == []


def test_closing_the_session_forgets_its_events(engine):
    session = Session(engine)
    order = Order(total=decimal.Decimal("1.00"))
    session.add(order)
    emit(session, "shop.order.created", order)
    session.close()  # the transaction is over, without a commit
    session.add(Customer(email="x@example.com"))
    session.commit()
    session.close()
    assert rows(engine) == []


def test_several_emits_in_one_transaction_keep_their_order(engine):
    with Session(engine) as session:
        customer = Customer(email="ann@example.com")
        session.add(customer)
        emit(session, "shop.customer.created", customer)
        orders = [Order(total=decimal.Decimal(n)) for n in range(5)]
        for order in orders:
            session.add(order)
            emit(session, "shop.order.created", order)
        session.flush()
        emit(session, "shop.customer.updated", customer, data={"orders": 5})
        session.commit()
    assert [r.type for r in rows(engine)] == (
        ["shop.customer.created"] + ["shop.order.created"] * 5 + ["shop.customer.updated"]
    )
    assert [payload(r)["total"] for r in rows(engine)[1:6]] == [str(n) for n in range(5)]


def test_the_event_carries_the_values_the_transaction_leaves(engine):
    with Session(engine) as session:
        order = Order(total=decimal.Decimal("0"))
        session.add(order)
        emit(session, "shop.order.created", order)
        session.flush()  # an autoflush before the lines are priced
        order.total = decimal.Decimal("30.00")
        session.commit()
    [row] = rows(engine)
    assert payload(row)["total"] == "30.00"


def test_an_emit_after_the_last_flush_is_still_written_at_commit(engine):
    with Session(engine) as session:
        order = Order(total=decimal.Decimal("5"))
        session.add(order)
        session.flush()
        emit(session, "shop.order.placed", order)  # session is clean now: commit flushes nothing
        session.commit()
    [row] = rows(engine)
    assert row.type == "shop.order.placed"


def test_deleting_an_entity_emits_its_last_state(engine):
    with Session(engine) as session:
        order = Order(total=decimal.Decimal("7.50"))
        session.add(order)
        session.commit()
        order_id = order.id
    with Session(engine) as session:
        order = session.get(Order, order_id)
        session.delete(order)
        emit(session, "shop.order.deleted", order)
        session.commit()
    [row] = rows(engine)
    assert row.aggregateid == str(order_id)
    assert payload(row)["total"] == "7.50"


def test_composite_keys_and_explicit_aggregate_names(engine):
    with Session(engine) as session:
        order = Order(total=decimal.Decimal("2"))
        session.add(order)
        session.flush()
        line = OrderLine(order_id=order.id, line_no=3, sku="SKU-1")
        session.add(line)
        emit(session, "shop.order.line_added", line)
        session.commit()
        order_id = order.id
    [row] = rows(engine)
    assert row.aggregatetype == "order"  # __strangler_aggregate__
    assert row.aggregateid == f"{order_id}:3"


def test_events_without_an_entity_name_their_aggregate(engine):
    with Session(engine) as session:
        session.execute(text("UPDATE orders SET status = 'PAID'"))
        emit(session, "shop.order.bulk_paid", aggregate="order", data={"status": "paid"})
        emit(session, "shop.order.paid", aggregate="order", key=42, data={"amount": decimal.Decimal("42.00")})
        session.commit()
    first, second = rows(engine)
    assert (first.aggregatetype, first.aggregateid) == ("order", "order")
    assert (second.aggregatetype, second.aggregateid) == ("order", "42")
    assert payload(second) == {"amount": "42.00"}


def test_lossless_encoding_of_values_json_cannot_hold(engine):
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc)
    ref = uuid.UUID("0191c3c8-8f8a-7cc0-9a3e-6a1f6b7c8d9e")
    with Session(engine) as session:
        emit(
            session,
            "shop.report.generated",
            aggregate="report",
            data={
                "amount": decimal.Decimal("1234567890.123456789"),
                "at": when,
                "day": when.date(),
                "ref": ref,
                "status": Status.PAID,
                "raw": b"\x00\x01\xff",
                "tags": ("a", "b"),
            },
        )
        session.commit()
    assert payload(rows(engine)[0]) == {
        "amount": "1234567890.123456789",
        "at": "2026-01-02T03:04:05.000006+00:00",
        "day": "2026-01-02",
        "ref": str(ref),
        "status": "paid",
        "raw": "AAH/",
        "tags": ["a", "b"],
    }


def test_event_ids_are_uuid7_and_increase(engine):
    with Session(engine) as session:
        ids = [emit(session, "shop.tick", aggregate="clock", data={"n": n}) for n in range(20)]
        session.commit()
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert ids == sorted(ids)


def test_an_unserialisable_attribute_names_class_and_attribute_and_nothing_lands(engine):
    with Session(engine) as session:
        invoice = Invoice(amount=Money("12.00"))
        session.add(invoice)
        emit(session, "shop.invoice.created", invoice)
        with pytest.raises(EmitError, match=r"Invoice\.amount: a value of type Money"):
            session.commit()
    assert rows(engine) == []
    with engine.connect() as conn:
        assert conn.execute(select(Invoice)).all() == []


def test_bad_data_is_refused_at_the_call(engine):
    with Session(engine) as session:
        with pytest.raises(EmitError, match=r"data\.when"):
            emit(session, "shop.x.happened", aggregate="x", data={"when": object()})
        with pytest.raises(EmitError, match="event type"):
            emit(session, "not a type", aggregate="x")
        with pytest.raises(EmitError, match="not a mapped SQLAlchemy entity"):
            emit(session, "shop.x.happened", {"a": 1})
        with pytest.raises(EmitError, match="aggregate="):
            emit(session, "shop.x.happened")
        with pytest.raises(EmitError, match="pass an instance of Customer, not the class"):
            emit(session, "shop.customer.created", Customer)
        with pytest.raises(EmitError, match="headers must map str to str"):
            emit(session, "shop.x.happened", aggregate="x", headers=["tenant"])
        with pytest.raises(EmitError, match="key is 300 characters, more than the outbox's 255"):
            emit(session, "shop.x.happened", aggregate="x", key="k" * 300)
        with pytest.raises(EmitError, match="aggregate is 256 characters"):
            emit(session, "shop.x.happened", aggregate="a" * 256)
        session.commit()
    assert rows(engine) == []  # on every database, SQLite too, which would have stored the long key


def test_scoped_session_as_flask_sqlalchemy_has_it(engine):
    db_session = scoped_session(sessionmaker(bind=engine))
    try:
        customer = Customer(email="bo@example.com")
        db_session.add(customer)
        emit(db_session, "shop.customer.created", customer)
        db_session.commit()
    finally:
        db_session.remove()
    [row] = rows(engine)
    assert payload(row)["email"] == "bo@example.com"


def test_core_connection_writes_in_its_transaction(engine):
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__).values(email="core@example.com"))
        emit(conn, "shop.customer.imported", aggregate="customer", key="core@example.com")
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            emit(conn, "shop.customer.imported", aggregate="customer", key="lost")
            raise RuntimeError("abort")
    assert [r.aggregateid for r in rows(engine)] == ["core@example.com"]


def test_dbapi_connection_of_a_legacy_module(sqlite_url):
    outbox_migrate.upgrade(outbox_migrate.standalone_config(sqlite_url))
    path = sqlite_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE audit (note TEXT)")
        cur = conn.cursor()
        cur.execute("INSERT INTO audit (note) VALUES ('closed day')")
        emit(cur.connection, "shop.audit.recorded", aggregate="audit", data={"note": "closed day"})
        conn.rollback()
        cur.execute("INSERT INTO audit (note) VALUES ('closed day')")
        emit(conn, "shop.audit.recorded", aggregate="audit", data={"note": "closed day"})
        conn.commit()
    finally:
        conn.close()
    engine = create_engine(sqlite_url)
    [row] = rows(engine)
    assert row.type == "shop.audit.recorded"
    assert row.timestamp.tzinfo is not None
    engine.dispose()


def test_traceparent_is_captured_inside_a_span(engine):
    trace = require_module("opentelemetry.trace", "tracing")
    sdk_trace = require_module("opentelemetry.sdk.trace", "tracing")
    tracer = sdk_trace.TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("checkout") as span:
        with Session(engine) as session:
            emit(session, "shop.order.checked_out", aggregate="order", key=1)
            session.commit()
        ctx = span.get_span_context()
    [row] = rows(engine)
    assert row.tracingspancontext == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    assert trace.get_current_span().get_span_context().is_valid is False


@pytest.fixture(params=["postgresql", "mariadb"])
def server_engine(request, tmp_path):
    """A migrated engine on a database server: SQLite has one writer at a time."""
    from outbox.testing.databases import temporary_database

    with temporary_database(request.param, tmp_path) as url:
        outbox_migrate.upgrade(outbox_migrate.standalone_config(url))
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        yield engine
        engine.dispose()


def test_writers_in_two_processes_lose_nothing(server_engine):
    engine = server_engine
    database_url = engine.url.render_as_string(hide_password=False)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(write_orders, [(database_url, 1, 60), (database_url, 2, 60)])
    written = [r.id for r in rows(engine)]
    assert sorted(written) == sorted(results[0] + results[1])
    assert len(set(written)) == 120
    # each writer's own events are in its commit order
    for mine in results:
        assert [i for i in written if i in set(mine)] == mine


def test_an_open_transaction_does_not_block_another_writer(server_engine):
    engine = server_engine
    holder = Session(engine)
    holder.add(Order(total=decimal.Decimal("1")))
    emit(holder, "shop.order.created", aggregate="order", key="held")
    holder.flush()  # the held transaction has inserted into the outbox and keeps its locks
    finished = threading.Event()

    def other_writer():
        write_orders(engine.url.render_as_string(hide_password=False), 3, 1)
        finished.set()

    thread = threading.Thread(target=other_writer, daemon=True)
    thread.start()
    try:
        assert finished.wait(30), "a second writer was blocked by an open outbox transaction"
    finally:
        holder.rollback()
        holder.close()
        thread.join(30)
    assert [payload(r)["writer"] for r in rows(engine)] == [3]


def test_an_async_session_emits_through_its_sync_session(tmp_path):
    """What ``strangler rewrite`` writes for an AsyncSession: the event commits and rolls back with it."""
    require_module("greenlet", "test")
    require_module("aiosqlite", "test")
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    path = tmp_path / "async.db"
    outbox_migrate.upgrade(outbox_migrate.standalone_config(f"sqlite:///{path}"))

    async def place_orders():
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with AsyncSession(engine) as session:
            kept = Order(total=decimal.Decimal("1.00"))
            session.add(kept)
            emit(session.sync_session, "shop.order.created", kept)
            await session.commit()
        async with AsyncSession(engine) as session:
            session.add(dropped := Order(total=decimal.Decimal("2.00")))
            emit(session.sync_session, "shop.order.created", dropped)
            await session.rollback()
        await engine.dispose()

    asyncio.run(place_orders())
    engine = create_engine(f"sqlite:///{path}")
    assert [(row.type, row.aggregateid) for row in rows(engine)] == [("shop.order.created", "1")]
    engine.dispose()
