from sample_monolith.shop.database import db
from sample_monolith.shop.models import Payment


def pay(client, order, **overrides):
    body = {"amount_cents": order["total_cents"], "method": "card", "card_last4": "4242"}
    body.update(overrides)
    return client.post(f"/orders/{order['id']}/payments", json=body)


def test_paying_the_total_marks_the_order_paid(client, place):
    order = place(("TEA", 1)).get_json()

    response = pay(client, order)

    assert response.status_code == 201
    payment = response.get_json()
    assert payment["status"] == "captured" and payment["reference"]
    assert payment["order_status"] == "paid"
    shown = client.get(f"/orders/{order['id']}").get_json()
    assert shown["status"] == "paid"
    assert [p["amount_cents"] for p in shown["payments"]] == [450]
    assert pay(client, order).status_code == 409


def test_wrong_amount_is_refused(client, place):
    order = place(("TEA", 1)).get_json()
    assert pay(client, order, amount_cents=1).status_code == 400
    assert pay(client, order, method=None).status_code == 400
    assert client.get(f"/orders/{order['id']}").get_json()["status"] == "placed"


def test_declined_card_is_recorded_and_purged_by_admin(app, client, place):
    order = place(("TEA", 1)).get_json()

    response = pay(client, order, card_last4="0002")

    assert response.status_code == 402
    assert response.get_json()["status"] == "failed"
    assert client.get(f"/orders/{order['id']}").get_json()["status"] == "placed"
    assert pay(client, order).status_code == 201

    purged = client.post("/admin/payments/purge-failed").get_json()

    assert purged == {"purged": 1}
    with app.app_context():
        assert [p.status for p in db.session.query(Payment)] == ["captured"]


def test_cancelling_a_paid_order_refunds_it(client, place):
    order = place(("POT", 1)).get_json()
    pay(client, order)

    cancelled = client.post(f"/orders/{order['id']}/cancel").get_json()

    assert cancelled["status"] == "cancelled"
    assert [p["status"] for p in cancelled["payments"]] == ["refunded"]
