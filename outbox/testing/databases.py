"""Throw-away databases on SQLite, PostgreSQL and MariaDB for tests.

Each test gets a database of its own, created before and dropped after, so
parallel runs never see each other's rows.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from .services import require_module, service_url

BACKENDS = ("sqlite", "postgresql", "mariadb")


@contextlib.contextmanager
def temporary_database(backend: str, tmp_path) -> Iterator[str]:
    """Yield the URL of a new empty database on ``backend``; drop it afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/strangler-{uuid.uuid4().hex[:8]}.sqlite3"
        return
    if backend == "postgresql":
        require_module("psycopg", "postgres")
    else:
        require_module("pymysql", "mysql")
    server_url = make_url(service_url(backend))
    name = f"strangler_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        yield server_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


def table_names(url: str) -> set[str]:
    """The names of the tables in the database at ``url``: what a test expects created, or left alone."""
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
