"""Where a SQLite database URL keeps its file: the one question several commands ask of a URL.

A relative file names a different database in another working folder (a
child process), and a file that does not exist yet is made by the first
connection: callers pin the one and check for the other.
"""

from __future__ import annotations

import os
from pathlib import Path


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL, made absolute from the current folder; None for any other URL.

    None too for an in-memory database (``sqlite://``, ``sqlite:///:memory:``,
    ``mode=memory``): see ``is_memory_sqlite``. With ``uri=true`` the file is
    the part of ``file:...`` before its query.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or is_memory_sqlite(url):
        return None
    database = parsed.database
    if sqlite_uri(parsed):
        database = uri_path(database)
    return Path(os.path.abspath(database))


def is_memory_sqlite(url: str) -> bool:
    """True for a SQLite URL of an in-memory database, which no other process can open."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return False
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    if sqlite_uri(parsed) and database.startswith("file:"):
        database = uri_path(database)
    return database in ("", ":memory:") or parsed.query.get("mode") == "memory"


def sqlite_uri(parsed) -> bool:
    """Whether a parsed SQLite URL names its database as a URI filename (``file:...`` with ``uri=true``)."""
    return str(parsed.query.get("uri", "")).lower() in ("true", "1", "yes", "on") and \
        (parsed.database or "").startswith("file:")


def uri_path(database: str) -> str:
    """The path of a SQLite URI filename: ``file:shop.db`` → shop.db, ``file:///srv/shop.db`` → /srv/shop.db."""
    rest = database[len("file:"):]
    if rest.startswith("//"):
        rest = rest[2:]
        rest = rest[len("localhost"):] if rest.startswith("localhost/") else rest
    return rest
