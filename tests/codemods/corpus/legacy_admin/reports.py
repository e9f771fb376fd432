"""Nightly reports and fix-ups, plain DB-API."""
import sqlite3

import redis

from .db import connect, connect_local

ARCHIVE_ORDERS = "INSERT INTO orders_archive SELECT * FROM orders WHERE created_at < %s"
PURGE_ORDERS = "DELETE FROM orders WHERE created_at < %s"
COUNT_ORDERS = "SELECT count(*) FROM orders WHERE created_at < %s"

r = redis.Redis()


def archive(before):
    conn = connect()
    cur = conn.cursor()
    cur.execute(COUNT_ORDERS, (before,))
    (count,) = cur.fetchone()
    cur.execute(ARCHIVE_ORDERS, (before,))  # expect: dbapi
    cur.execute(PURGE_ORDERS, (before,))  # expect: dbapi
    conn.commit()
    r.delete("orders:count")
    return count


def mark_shipped(order_ids):
    conn = connect()
    with conn:
        with conn.cursor() as cur:
            cur.executemany(  # expect: dbapi
                "UPDATE orders SET status = 'shipped' WHERE id = %s",
                [(order_id,) for order_id in order_ids],
            )


def top_customers(limit=10):
    conn = connect_local()
    cur = conn.cursor()
    cur.execute(
        "SELECT customer_id, sum(total) FROM orders GROUP BY customer_id "
        "ORDER BY 2 DESC LIMIT ?  -- never DELETE FROM orders here",
        (limit,),
    )
    return cur.fetchall()


def reset_counters():
    conn = sqlite3.connect("admin.db", isolation_level=None)
    conn.execute("UPDATE counters SET value = 0")  # expect: dbapi
    conn.execute("VACUUM")


def record_login(conn, user_id, when):
    cursor = conn.cursor()
    cursor.execute("INSERT INTO logins (user_id, at) VALUES (?, ?)", (user_id, when))  # expect: dbapi
    conn.commit()


def flush_cache():
    pipe = r.pipeline()
    pipe.delete("a")
    pipe.delete("b")
    pipe.execute()
