from sample_monolith.shop.database import db
from sample_monolith.shop.models import LoyaltyEntry, Order

from .conftest import make_app


def test_placing_an_order_reserves_stock_credits_points_and_mails(client, place, stock, mails):
    response = place(("TEA", 2), ("MUG", 1))

    assert response.status_code == 201
    order = response.get_json()
    assert order["status"] == "placed"
    assert order["total_cents"] == 2 * 450 + 1200
    assert [(line["sku"], line["quantity"]) for line in order["lines"]] == [("TEA", 2), ("MUG", 1)]
    assert stock(1) == (20, 2)
    assert stock(2) == (5, 1)
    assert client.get(f"/customers/{order['customer_id']}").get_json()["loyalty_points"] == 21
    assert mails() == [
        {
            "to": "ada@example.com",
            "subject": f"Your order #{order['id']} is confirmed",
            "body": f"Hello Ada,\n\nThank you for your order #{order['id']}. Total: $21.00.\n\n"
            "The Shop team\n",
            "order_id": order["id"],
        }
    ]


def test_loyalty_ledger_records_each_award(app, place):
    first = place(("POT", 1)).get_json()
    place(("TEA", 1))
    with app.app_context():
        entries = [(e.order_id, e.points, e.reason) for e in LoyaltyEntry.query.order_by("id")]
    assert entries[0] == (first["id"], 39, "order")
    assert entries[1][1:] == (4, "order")


def test_an_order_under_a_dollar_earns_no_points(app, client, place):
    gum = {"id": 9, "sku": "GUM", "name": "Chewing gum", "price_cents": 60, "stock": 50}
    assert client.post("/admin/catalogue/import", json={"rows": [gum]}).status_code == 200
    order = place(("GUM", 1)).get_json()
    assert order["total_cents"] == 60
    assert client.get(f"/customers/{order['customer_id']}").get_json()["loyalty_points"] == 0
    with app.app_context():
        assert LoyaltyEntry.query.count() == 0


def test_checkout_merges_repeated_items_and_drops_empty_lines(place, stock):
    order = place(("TEA", 1), ("MUG", 0), ("TEA", 2)).get_json()
    assert [(line["sku"], line["quantity"]) for line in order["lines"]] == [("TEA", 3)]
    assert stock(2) == (5, 0)


def test_ten_or_more_of_an_item_are_discounted(place):
    order = place(("TEA", 10)).get_json()
    assert order["total_cents"] == 10 * 405


def test_out_of_stock_places_nothing(app, client, place, stock, mails):
    response = place(("MUG", 1), ("POT", 2))

    assert response.status_code == 409
    assert "fewer than 2" in response.get_json()["error"]
    assert stock(2) == (5, 0) and stock(3) == (1, 0)
    with app.app_context():
        assert Order.query.count() == 0
    assert mails() == []


def test_unknown_or_empty_orders_are_refused(client, place, customer):
    assert place(("NOPE", 1)).status_code == 404
    assert place(("TEA", 0)).status_code == 400
    no_customer = {"lines": [{"sku": "TEA", "quantity": 1}]}
    assert client.post("/orders", json=no_customer).status_code == 400
    assert place(("TEA", 1), customer_id=999).status_code == 404


def test_inline_email_off_by_config(tmp_path, catalogue):
    app = make_app(tmp_path, INLINE_EMAIL=False)
    client = app.test_client()
    client.post("/admin/catalogue/import", json={"rows": list(catalogue.values())})
    customer = client.post("/customers", json={"email": "b@example.com", "name": "B"}).get_json()

    response = client.post(
        "/orders", json={"customer_id": customer["id"], "lines": [{"sku": "TEA", "quantity": 1}]}
    )

    assert response.status_code == 201
    assert not (tmp_path / "mail.spool.jsonl").exists()


def test_inline_email_off_by_environment(tmp_path, monkeypatch):
    from sample_monolith.shop import create_app

    monkeypatch.setenv("SHOP_INLINE_EMAIL", "0")
    monkeypatch.setenv("SHOP_MAIL_SPOOL", str(tmp_path / "spool.jsonl"))
    monkeypatch.setenv("SHOP_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    app = create_app(instance_path=str(tmp_path / "instance"))
    assert app.config["INLINE_EMAIL"] is False
    assert app.config["MAIL_SPOOL"] == str(tmp_path / "spool.jsonl")
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("env.db")

    monkeypatch.setenv("SHOP_INLINE_EMAIL", "1")
    assert create_app(instance_path=str(tmp_path / "instance")).config["INLINE_EMAIL"] is True


def test_default_database_is_a_file_in_the_instance_folder(tmp_path, monkeypatch):
    from sample_monolith.shop import create_app

    monkeypatch.delenv("SHOP_DATABASE_URL", raising=False)
    app = create_app(instance_path=str(tmp_path / "inst"))
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'inst' / 'shop.db'}"


def test_removing_a_line_gives_back_stock_and_points(client, place, stock):
    order = place(("TEA", 2), ("POT", 1)).get_json()
    pot_line = next(line for line in order["lines"] if line["sku"] == "POT")

    response = client.delete(f"/orders/{order['id']}/lines/{pot_line['id']}")

    assert response.status_code == 200
    changed = response.get_json()
    assert [line["sku"] for line in changed["lines"]] == ["TEA"]
    assert changed["total_cents"] == 900
    assert stock(3) == (1, 0)
    assert client.get(f"/customers/{order['customer_id']}").get_json()["loyalty_points"] == 9

    last = changed["lines"][0]["id"]
    assert client.delete(f"/orders/{order['id']}/lines/{last}").status_code == 409
    assert client.delete(f"/orders/{order['id']}/lines/9999").status_code == 404


def test_cancelling_releases_stock_and_takes_back_points(app, client, place, stock, mails):
    order = place(("MUG", 2)).get_json()

    response = client.post(f"/orders/{order['id']}/cancel")

    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    assert stock(2) == (5, 0)
    assert client.get(f"/customers/{order['customer_id']}").get_json()["loyalty_points"] == 0
    with app.app_context():
        assert db.session.get(Order, order["id"]).cancelled_at is not None
        reasons = [e.reason for e in LoyaltyEntry.query.order_by("id")]
    assert reasons == ["order", "order cancelled"]
    assert client.post(f"/orders/{order['id']}/cancel").status_code == 409
    assert len(mails()) == 1


def test_cancelled_orders_cannot_change(client, place):
    order = place(("TEA", 1), ("MUG", 1)).get_json()
    client.post(f"/orders/{order['id']}/cancel")
    line = order["lines"][0]["id"]
    assert client.delete(f"/orders/{order['id']}/lines/{line}").status_code == 409
    assert client.get("/orders/999").status_code == 404
