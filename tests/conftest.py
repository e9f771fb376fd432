"""Fixtures shared by every test package: real databases and a clean outbox config."""

from __future__ import annotations

import pytest

from outbox import settings
from outbox.testing.databases import BACKENDS, temporary_database


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """URL of a fresh, empty database on each backend: SQLite, PostgreSQL, MariaDB."""
    with temporary_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path):
    """URL of a fresh SQLite database file."""
    with temporary_database("sqlite", tmp_path) as url:
        yield url


@pytest.fixture
def empty_sqlite_url(sqlite_url):
    """URL of a SQLite database file that exists and holds no table: a database never migrated."""
    from sqlalchemy import create_engine

    engine = create_engine(sqlite_url)
    with engine.connect():
        pass
    engine.dispose()
    return sqlite_url


@pytest.fixture
def postgresql_url(tmp_path):
    """URL of a fresh PostgreSQL database."""
    with temporary_database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def mariadb_url(tmp_path):
    """URL of a fresh MariaDB database."""
    with temporary_database("mariadb", tmp_path) as url:
        yield url


@pytest.fixture(autouse=True)
def _fresh_outbox_settings():
    settings.reset()
    yield
    settings.reset()
