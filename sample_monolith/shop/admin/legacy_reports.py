"""Nightly sales reports.

Written before the shop used the ORM and never ported: plain DB-API through the
engine's raw connection, SQLite parameter style. Runs from the admin page or cron.
"""

from ..database import db

SALES_OF_DAY = """
    SELECT l.product_id, SUM(l.quantity), SUM(l.quantity * l.unit_price_cents)
    FROM order_lines l JOIN orders o ON o.id = l.order_id
    WHERE o.status IN ('placed', 'paid', 'shipped') AND substr(o.created_at, 1, 10) = ?
    GROUP BY l.product_id
    ORDER BY l.product_id
"""


def rebuild_daily_sales(day):
    """Recompute the ``daily_sales`` rows of ``day`` (YYYY-MM-DD); returns how many rows."""
    conn = db.engine.raw_connection()
    try:
        cursor = conn.cursor()
        cursor.execute("DELETE FROM daily_sales WHERE day = ?", (day,))
        cursor.execute(SALES_OF_DAY, (day,))
        rows = cursor.fetchall()
        for product_id, units, revenue in rows:
            cursor.execute(
                "INSERT INTO daily_sales (day, product_id, units, revenue_cents) "
                "VALUES (?, ?, ?, ?)",
                (day, product_id, units, revenue),
            )
        conn.commit()
        return len(rows)
    finally:
        conn.close()


def daily_sales_report(day):
    conn = db.engine.raw_connection()
    try:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT s.product_id, p.sku, s.units, s.revenue_cents FROM daily_sales s "
            "JOIN products p ON p.id = s.product_id WHERE s.day = ? ORDER BY s.product_id",
            (day,),
        )
        return [
            {"product_id": pid, "sku": sku, "units": units, "revenue_cents": revenue}
            for pid, sku, units, revenue in cursor.fetchall()
        ]
    finally:
        conn.close()


def drop_report_day(day):
    conn = db.engine.raw_connection()
    try:
        cursor = conn.cursor()
        cursor.execute("DELETE FROM daily_sales WHERE day = ?", (day,))
        removed = cursor.rowcount
        conn.commit()
        return removed
    finally:
        conn.close()


def top_customers(limit=10):
    """Customers by money spent on orders that were not cancelled."""
    conn = db.engine.raw_connection()
    try:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT o.customer_id, o.email, SUM(o.total_cents) AS spent FROM orders o "
            "WHERE o.status != 'cancelled' GROUP BY o.customer_id, o.email "
            "ORDER BY spent DESC, o.customer_id"
        )
        report, seen = [], set()
        for customer_id, email, spent in cursor.fetchall():
            # Orders of deleted accounts have no customer id; show them once, under their e-mail.
            key = customer_id or email
            if key in seen:
                continue
            seen.add(key)
            report.append({"customer_id": customer_id, "email": email, "spent_cents": spent})
        return report[:limit]
    finally:
        conn.close()
