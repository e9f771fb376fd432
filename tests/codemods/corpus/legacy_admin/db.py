"""Connections for the admin scripts, from before the ORM."""
import os
import sqlite3

import psycopg2

DSN = os.environ.get("ADMIN_DSN", "dbname=shop")


def connect():
    return psycopg2.connect(DSN)


def connect_local(path="admin.db"):
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    return conn
