"""Drive the shop the way its customers do, deterministically, through the test client.

    python -m sample_monolith.shop.simulate --orders 5 --db sqlite:///shop.db --create-schema

Customers sign up (or are found, on a second run), each places an order; the
first order is paid and the second cancelled. Prints what was done as JSON.

The database must have the shop's tables: migrate it first
(alembic -c sample_monolith/alembic.ini -x db=URL upgrade heads) or pass
--create-schema. Without them it says so in one line and exits 2.
"""

import argparse
import json
import os
import sys

SAMPLE_CATALOGUE = [
    {"id": 101, "sku": "TEA-EARL", "name": "Earl Grey, 250 g", "price_cents": 1250, "stock": 500},
    {"id": 102, "sku": "MUG-BLUE", "name": "Blue enamel mug", "price_cents": 1800, "stock": 500},
    {"id": 103, "sku": "POT-CAST", "name": "Cast-iron teapot", "price_cents": 6400, "stock": 500},
    {"id": 104, "sku": "BIS-SHRT", "name": "Shortbread tin", "price_cents": 899, "stock": 500},
]

FIRST_NAMES = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"]


class SimulationError(RuntimeError):
    """The shop answered a request with an unexpected status."""


def _call(client, method, url, expect, **kwargs):
    response = client.open(url, method=method, **kwargs)
    if response.status_code not in expect:
        raise SimulationError(f"{method} {url}: {response.status_code} {response.get_data(True)}")
    return response


def _customer(client, index):
    email = f"customer{index}@example.com"
    name = f"{FIRST_NAMES[index % len(FIRST_NAMES)]} Example{index}"
    response = _call(
        client, "POST", "/customers", (201, 409), json={"email": email, "name": name}
    )
    if response.status_code == 409:
        response = _call(client, "GET", "/customers", (200,), query_string={"email": email})
    return response.get_json()


def _basket(index):
    first = SAMPLE_CATALOGUE[index % len(SAMPLE_CATALOGUE)]
    lines = [{"sku": first["sku"], "quantity": 1 + index % 3}]
    if index % 2 == 0:
        second = SAMPLE_CATALOGUE[(index + 1) % len(SAMPLE_CATALOGUE)]
        lines.append({"sku": second["sku"], "quantity": 1})
    return lines


def place_sample_orders(app, n=5):
    """Import the sample catalogue, sign up ``n`` customers, place one order each,
    pay the first and cancel the second. Returns what was done."""
    client = app.test_client()
    _call(client, "POST", "/admin/catalogue/import", (200,), json={"rows": SAMPLE_CATALOGUE})

    customers, orders = [], []
    for index in range(n):
        customer = _customer(client, index)
        customers.append(customer["id"])
        order = _call(
            client, "POST", "/orders", (201,),
            json={"customer_id": customer["id"], "lines": _basket(index)},
        ).get_json()
        orders.append(order)

    paid, cancelled = [], []
    if orders:
        first = orders[0]
        _call(
            client, "POST", f"/orders/{first['id']}/payments", (201,),
            json={"amount_cents": first["total_cents"], "method": "card", "card_last4": "4242"},
        )
        paid.append(first["id"])
    if len(orders) > 1:
        _call(client, "POST", f"/orders/{orders[1]['id']}/cancel", (200,))
        cancelled.append(orders[1]["id"])

    return {
        "customers": customers,
        "orders": [
            {"id": o["id"], "email": o["email"], "total_cents": o["total_cents"]} for o in orders
        ],
        "paid": paid,
        "cancelled": cancelled,
        "inline_email": bool(app.config["INLINE_EMAIL"]),
        "mail_spool": app.config["MAIL_SPOOL"],
    }


def _from_working_folder(url):
    """A relative SQLite path on the command line means the working folder, as Alembic reads it.

    (Flask-SQLAlchemy would otherwise resolve it inside the instance folder.)
    """
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix):].startswith("/") and url != prefix:
        return prefix + os.path.abspath(url[len(prefix):])
    return url


def _alembic_ini():
    """The shop's alembic.ini, as a reader in the working folder would name it."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "alembic.ini")
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative


def missing_tables(app):
    """The shop's tables the database lacks, in the order the models declare them."""
    from sqlalchemy import inspect

    from . import models  # noqa: F401  (registers the tables)
    from .database import db

    with app.app_context():
        present = set(inspect(db.engine).get_table_names())
    return [name for name in db.metadata.tables if name not in present]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m sample_monolith.shop.simulate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--orders", type=int, default=5, help="how many orders (default 5)")
    parser.add_argument("--db", help="database URL (default: SHOP_DATABASE_URL, else instance)")
    parser.add_argument("--mail-spool", help="mail spool file (default: SHOP_MAIL_SPOOL)")
    parser.add_argument("--instance", help="instance folder (default: SHOP_INSTANCE_PATH)")
    email = parser.add_mutually_exclusive_group()
    email.add_argument("--inline-email", dest="inline_email", action="store_true", default=None)
    email.add_argument("--no-inline-email", dest="inline_email", action="store_false")
    parser.add_argument(
        "--create-schema", action="store_true", help="create missing tables (without Alembic)"
    )
    args = parser.parse_args(argv)

    from sqlalchemy.exc import OperationalError

    from . import create_app
    from .database import db

    overrides = {}
    if args.db:
        overrides["SQLALCHEMY_DATABASE_URI"] = _from_working_folder(args.db)
    if args.mail_spool:
        overrides["MAIL_SPOOL"] = args.mail_spool
    if args.inline_email is not None:
        overrides["INLINE_EMAIL"] = args.inline_email
    app = create_app(overrides, instance_path=args.instance)
    with app.app_context():
        if args.create_schema:
            from . import models  # noqa: F401

            db.create_all()
    url = args.db or app.config["SQLALCHEMY_DATABASE_URI"]
    try:
        missing = missing_tables(app)
    except OperationalError as error:
        print(f"error: cannot open the database {url}: {error.orig}", file=sys.stderr)
        return 2
    if missing:
        more = f" (and {len(missing) - 1} more of the shop's tables)" if len(missing) > 1 else ""
        print(
            f"error: no table {missing[0]} in {url}{more}: create the schema first with "
            f"'alembic -c {_alembic_ini()} -x db={url} upgrade heads' (or pass --create-schema)",
            file=sys.stderr,
        )
        return 2
    try:
        report = place_sample_orders(app, args.orders)
    except SimulationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
