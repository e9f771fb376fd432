"""The ledger's pairing of changes and events: each defect it exists to catch is caught, and nothing else."""

from __future__ import annotations

from .ledger import inserted_values, unmatched


def row(change, aggregate, key, what="row"):
    return {"aggregate": aggregate, "key": key, "change": change, "by": "row", "what": what}


def statement(change, aggregate, key=None, what="statement"):
    return {"aggregate": aggregate, "key": key, "change": change, "by": "statement", "what": what}


def event(type_, aggregatetype, aggregateid):
    return [type_, aggregatetype, aggregateid, f"id-{type_}-{aggregateid}"]


def test_one_event_per_change_pairs_even_when_a_greedy_choice_would_not():
    # The 'saved' event fits both changes; only pairing it with the UPDATE leaves 'created' for the INSERT.
    transaction = {
        "changes": [row("UPDATE", "order", "1"), row("INSERT", "order", "1"),
                    statement("UPDATE", "payment"), statement("DELETE", "stock_level", "7")],
        "events": [event("shop.order.saved", "order", "1"), event("shop.order.created", "order", "1"),
                   event("shop.payment.updated", "payment", "payment"),
                   event("shop.stock_level.deleted", "stock_level", "7")],
    }
    assert unmatched(transaction) == []


def test_a_write_with_no_event():
    transaction = {"changes": [row("INSERT", "loyalty_entry", "4")], "events": []}
    assert unmatched(transaction) == ["a write with no event: INSERT of loyalty_entry 4 (row)"]


def test_an_event_with_no_write():
    transaction = {"changes": [], "events": [event("shop.customer.updated", "customer", "1")]}
    assert unmatched(transaction) == ["an event with no write: ['shop.customer.updated', 'customer', '1']"]


def test_two_events_for_one_change():
    transaction = {
        "changes": [row("UPDATE", "order", "3")],
        "events": [event("shop.order.updated", "order", "3"), event("shop.order.updated", "order", "3")],
    }
    [problem] = unmatched(transaction)
    assert problem.startswith("two events for one change:") and "UPDATE of order 3" in problem


def test_the_verb_the_key_and_the_aggregate_must_fit():
    for wrong in (event("shop.order.deleted", "order", "3"),  # verb of another kind of change
                  event("shop.order.updated", "order", "4"),  # another row
                  event("shop.order_line.updated", "order_line", "3")):  # another aggregate
        problems = unmatched({"changes": [row("UPDATE", "order", "3")], "events": [wrong]})
        assert len(problems) == 2 and problems[0].startswith("a write with no event"), wrong
    # A statement that pins its key needs it; one that does not takes the event of any key.
    assert unmatched({"changes": [statement("UPDATE", "stock_level", "9")],
                      "events": [event("shop.stock_level.updated", "stock_level", "stock_level")]}) != []
    assert unmatched({"changes": [statement("UPDATE", "stock_level")],
                      "events": [event("shop.stock_level.updated", "stock_level", "stock_level")]}) == []
    # A domain verb names what happened, whatever kind of write it took.
    assert unmatched({"changes": [row("UPDATE", "order", "3")],
                      "events": [event("shop.order.cancelled", "order", "3")]}) == []


def test_a_row_created_and_deleted_in_one_transaction_is_two_changes():
    changes = [row("INSERT", "order", "5"), row("DELETE", "order", "5")]
    assert unmatched({"changes": changes, "events": [event("shop.order.created", "order", "5"),
                                                     event("shop.order.deleted", "order", "5")]}) == []
    assert unmatched({"changes": changes, "events": [event("shop.order.deleted", "order", "5")]}) == [
        "a write with no event: INSERT of order 5 (row)"]


def test_outbox_rows_written_through_a_dbapi_cursor_are_read_back_from_the_traced_sql():
    traced = ('INSERT INTO strangler_outbox ("id", "aggregatetype", "aggregateid", "type", "payload") '
              "VALUES ('0190-a', 'daily_sales', 'it''s', 'shop.daily_sales.created', x'7b7d'), "
              "('0190-b', 'order', NULL, 'shop.order.updated', x'00')")
    assert inserted_values(traced) == [
        {"id": "0190-a", "aggregatetype": "daily_sales", "aggregateid": "it's", "type": "shop.daily_sales.created",
         "payload": "x7b7d"},
        {"id": "0190-b", "aggregatetype": "order", "aggregateid": None, "type": "shop.order.updated",
         "payload": "x00"},
    ]
