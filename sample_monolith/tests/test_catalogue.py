from sample_monolith.shop.database import db
from sample_monolith.shop.models import Product


def test_import_creates_products_with_stock(client, catalogue, stock):
    products = client.get("/products").get_json()
    assert [(p["sku"], p["available"]) for p in products] == [("TEA", 20), ("MUG", 5), ("POT", 1)]
    assert stock(1) == (20, 0)


def test_reimport_updates_products_in_place(app, client, catalogue, place, stock):
    place(("MUG", 2))
    client.get("/products")  # cached
    rows = [dict(row) for row in catalogue.values()]
    rows[1].update(price_cents=1500, name="Big mug", stock=999)
    rows.append({"id": 4, "sku": "JAR", "name": "Honey jar", "price_cents": 700, "stock": 3})

    result = client.post("/admin/catalogue/import", json={"rows": rows}).get_json()

    assert result == {"products": 4, "new_stock_rows": 1}
    with app.app_context():
        mug = db.session.get(Product, 2)
        assert (mug.name, mug.price_cents) == ("Big mug", 1500)
        assert Product.query.count() == 4
    assert stock(2) == (5, 2)  # the feed does not overwrite counted stock
    assert stock(4) == (3, 0)
    assert [p["sku"] for p in client.get("/products").get_json()] == ["TEA", "MUG", "POT", "JAR"]


def test_import_refuses_rows_without_ids(client):
    response = client.post("/admin/catalogue/import", json={"rows": [{"sku": "X", "name": "X"}]})
    assert response.status_code == 400


def test_price_change_applies_to_new_orders(client, catalogue, place):
    client.get("/products")
    assert client.post("/admin/products/TEA/price", json={"price_cents": 500}).status_code == 200
    assert client.get("/products").get_json()[0]["price_cents"] == 500
    assert place(("TEA", 2)).get_json()["total_cents"] == 1000
    assert client.post("/admin/products/NOPE/price", json={"price_cents": 5}).status_code == 404
    assert client.post("/admin/products/TEA/price", json={"price_cents": 0}).status_code == 400


def test_discontinued_products_cannot_be_ordered(client, catalogue, place):
    response = client.post("/admin/products/discontinue", json={"skus": ["POT", "MUG"]})
    assert response.get_json() == {"discontinued": 2}
    assert [p["sku"] for p in client.get("/products").get_json()] == ["TEA"]
    assert place(("POT", 1)).status_code == 404


def test_restock_adds_to_on_hand(client, catalogue, place, stock):
    place(("POT", 1))
    assert place(("POT", 1)).status_code == 409

    response = client.post("/admin/inventory/3/restock", json={"quantity": 4})

    assert response.get_json() == {"product_id": 3, "on_hand": 5, "reserved": 1}
    assert place(("POT", 1)).status_code == 201
    assert client.post("/admin/inventory/3/restock", json={"quantity": 0}).status_code == 400


def test_restock_creates_a_missing_stock_row(app, client, catalogue, stock):
    with app.app_context():
        Product(id=9, sku="NEW", name="New", price_cents=100).save()
    response = client.post("/admin/inventory/9/restock", json={"quantity": 7})
    assert response.get_json()["on_hand"] == 7
    assert stock(9) == (7, 0)
