from datetime import datetime, timezone


def today():
    # Orders are stamped in UTC.
    return datetime.now(timezone.utc).date().isoformat()


def test_daily_sales_report_counts_orders_not_cancelled(client, place):
    place(("TEA", 2), ("MUG", 1))
    place(("TEA", 1))
    cancelled = place(("POT", 1)).get_json()
    client.post(f"/orders/{cancelled['id']}/cancel")

    rebuilt = client.post(f"/admin/reports/daily-sales/{today()}").get_json()

    assert rebuilt == {"day": today(), "rows": 2}
    report = client.get(f"/admin/reports/daily-sales/{today()}").get_json()
    assert [(r["sku"], r["units"], r["revenue_cents"]) for r in report] == [
        ("TEA", 3, 1350),
        ("MUG", 1, 1200),
    ]


def test_daily_sales_rebuild_replaces_the_day(client, place):
    place(("TEA", 1))
    client.post(f"/admin/reports/daily-sales/{today()}")
    place(("TEA", 1))

    client.post(f"/admin/reports/daily-sales/{today()}")

    report = client.get(f"/admin/reports/daily-sales/{today()}").get_json()
    assert [(r["sku"], r["units"]) for r in report] == [("TEA", 2)]


def test_dropping_a_report_day(client, place):
    place(("TEA", 1))
    client.post(f"/admin/reports/daily-sales/{today()}")

    assert client.delete(f"/admin/reports/daily-sales/{today()}").get_json() == {"removed": 1}
    assert client.get(f"/admin/reports/daily-sales/{today()}").get_json() == []
    assert client.post("/admin/reports/daily-sales/yesterday").status_code == 400


def test_top_customers(client, customer, place):
    other = client.post("/customers", json={"email": "bo@example.com", "name": "Bo"}).get_json()
    place(("TEA", 1))
    place(("POT", 1), customer_id=other["id"])
    client.delete(f"/customers/{other['id']}")

    report = client.get("/admin/reports/top-customers").get_json()

    assert report == [
        {"customer_id": None, "email": "bo@example.com", "spent_cents": 3999},
        {"customer_id": customer["id"], "email": "ada@example.com", "spent_cents": 450},
    ]
    assert len(client.get("/admin/reports/top-customers?limit=1").get_json()) == 1
