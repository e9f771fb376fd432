from sample_monolith.shop.database import db
from sample_monolith.shop.models import Customer, LoyaltyEntry, Order


def test_sign_up_normalises_the_email(client):
    response = client.post("/customers", json={"email": " Grace@Example.COM ", "name": "Grace"})
    assert response.status_code == 201
    assert response.get_json()["email"] == "grace@example.com"
    assert client.get("/customers", query_string={"email": "grace@example.com"}).status_code == 200


def test_sign_up_refuses_duplicates_and_bad_input(client, customer):
    duplicate = client.post("/customers", json={"email": "ADA@example.com", "name": "Other"})
    assert duplicate.status_code == 409
    assert client.post("/customers", json={"email": "nobody", "name": "X"}).status_code == 400
    assert client.post("/customers", json={"email": "x@example.com"}).status_code == 400
    assert client.get("/customers", query_string={"email": "who@example.com"}).status_code == 404


def test_profile_update_is_visible_at_once(client, customer):
    assert client.get(f"/customers/{customer['id']}").get_json()["name"] == "Ada"  # now cached

    response = client.patch(
        f"/customers/{customer['id']}", json={"name": "Ada Lovelace", "marketing_opt_in": True}
    )

    assert response.status_code == 200
    shown = client.get(f"/customers/{customer['id']}").get_json()
    assert shown["name"] == "Ada Lovelace"
    assert shown["marketing_opt_in"] is True


def test_deleting_a_customer_keeps_their_orders(app, client, customer, place):
    order = place(("TEA", 1)).get_json()
    client.get(f"/customers/{customer['id']}")

    response = client.delete(f"/customers/{customer['id']}")

    assert response.status_code == 204
    assert client.get(f"/customers/{customer['id']}").status_code == 404
    kept = client.get(f"/orders/{order['id']}").get_json()
    assert kept["customer_id"] is None
    assert kept["email"] == "ada@example.com"
    with app.app_context():
        assert db.session.get(Customer, customer["id"]) is None
        assert LoyaltyEntry.query.count() == 0
        assert Order.query.count() == 1
    assert client.delete(f"/customers/{customer['id']}").status_code == 404


def test_customer_order_history(client, customer, place):
    first = place(("TEA", 1)).get_json()
    second = place(("MUG", 1)).get_json()
    history = client.get(f"/customers/{customer['id']}/orders").get_json()
    assert [o["id"] for o in history] == [first["id"], second["id"]]
