"""Fixtures of the shop's tests: a fresh app on its own SQLite file per test."""

import pytest

from sample_monolith.shop import create_app
from sample_monolith.shop.cache import cache
from sample_monolith.shop.database import db
from sample_monolith.shop.mailer import read_spool

CATALOGUE = [
    {"id": 1, "sku": "TEA", "name": "Tea", "price_cents": 450, "stock": 20},
    {"id": 2, "sku": "MUG", "name": "Mug", "price_cents": 1200, "stock": 5},
    {"id": 3, "sku": "POT", "name": "Teapot", "price_cents": 3999, "stock": 1},
]


def make_app(tmp_path, **overrides):
    config = {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'shop.db'}",
        "MAIL_SPOOL": str(tmp_path / "mail.spool.jsonl"),
        "INLINE_EMAIL": True,
    }
    config.update(overrides)
    app = create_app(config, instance_path=str(tmp_path / "instance"))
    with app.app_context():
        db.create_all()
    return app


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def catalogue(client):
    response = client.post("/admin/catalogue/import", json={"rows": CATALOGUE})
    assert response.status_code == 200, response.get_data(True)
    return {row["sku"]: row for row in CATALOGUE}


@pytest.fixture
def customer(client):
    response = client.post("/customers", json={"email": "ada@example.com", "name": "Ada"})
    assert response.status_code == 201, response.get_data(True)
    return response.get_json()


@pytest.fixture
def place(client, customer, catalogue):
    """Place an order for ``customer``: place(("TEA", 2), ("MUG", 1)) -> the response."""

    def place(*lines, customer_id=None):
        return client.post(
            "/orders",
            json={
                "customer_id": customer_id or customer["id"],
                "lines": [{"sku": sku, "quantity": quantity} for sku, quantity in lines],
            },
        )

    return place


@pytest.fixture
def mails(app):
    """The messages in the mail spool so far: mails() -> list of dicts."""
    return lambda: read_spool(app.config["MAIL_SPOOL"])


@pytest.fixture
def stock(app):
    """stock(product_id) -> (on_hand, reserved), read straight from the database."""
    from sample_monolith.shop.models import StockLevel

    def stock(product_id):
        with app.app_context():
            level = db.session.get(StockLevel, product_id)
            return level.on_hand, level.reserved

    return stock
