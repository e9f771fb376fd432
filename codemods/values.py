"""What an expression is, as far as the codemods care: a session, a query of ``Order``, a cursor…

One small immutable value type shared by the whole-repo index and the per-file
detector, so both answer "is this a SQLAlchemy session?" the same way.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Value:
    """The kind of thing an expression evaluates to, with the mapped class or table it concerns.

    Kinds: ``fsa`` (Flask-SQLAlchemy object), ``base`` (declarative base), ``session``,
    ``session_factory``, ``engine``, ``core_conn``, ``dbapi_conn``, ``cursor``, ``class``,
    ``entity``, ``entities``, ``query``, ``result``, ``select``, ``table``, ``stmt``, ``sql``,
    ``str``, ``collection``, ``function``, ``other`` (known not to touch the database),
    ``external`` (imported from outside the scanned tree).
    """

    kind: str
    cls: str | None = None  # qualified name of a class, mapped or not
    table: str | None = None
    verb: str | None = None  # for stmt / sql: created, updated, deleted
    # entity: new, loaded, param; external: qualified name; session(_factory), engine, core_conn: async
    origin: str | None = None
    attr: str | None = None  # collection: relationship name; function: qualified name
    flag: bool | None = None  # dbapi_conn, engine, core_conn: autocommit; session: found by name only (weak)
    text: str | None = None  # str: the literal's value; cursor: the connection's code
    key: str | None = None  # stmt / query: code of the primary key value the statement pins


OTHER = Value("other")
SESSION = Value("session")
WEAK_SESSION = Value("session", flag=True)
# An AsyncSession: emit takes its `sync_session`, the Session it drives (whose commit fires emit's listeners).
ASYNC_SESSION = Value("session", origin="async")
# asyncio Core: an AsyncEngine's connections are AsyncConnections. emit writes through a Connection at
# once, which an async driver can do only inside the AsyncConnection's `run_sync` (a bare
# `sync_connection` raises MissingGreenlet): the emit is `await conn.run_sync(emit, ...)`.
ASYNC_ENGINE = Value("engine", origin="async")
ASYNC_CORE_CONN = Value("core_conn", origin="async")

# Qualified names of things outside the scanned tree whose call yields a known value.
EXTERNAL_CALLS: dict[str, Value] = {
    "flask_sqlalchemy.SQLAlchemy": Value("fsa"),
    "flask_sqlalchemy.extension.SQLAlchemy": Value("fsa"),
    "sqlalchemy.orm.sessionmaker": Value("session_factory"),
    "sqlalchemy.orm.session.sessionmaker": Value("session_factory"),
    "sqlalchemy.orm.scoped_session": SESSION,
    "sqlalchemy.orm.scoping.scoped_session": SESSION,
    "sqlalchemy.orm.Session": SESSION,
    "sqlalchemy.orm.session.Session": SESSION,
    "sqlalchemy.ext.asyncio.AsyncSession": ASYNC_SESSION,
    "sqlalchemy.ext.asyncio.session.AsyncSession": ASYNC_SESSION,
    "sqlalchemy.ext.asyncio.async_sessionmaker": Value("session_factory", origin="async"),
    "sqlalchemy.ext.asyncio.session.async_sessionmaker": Value("session_factory", origin="async"),
    "sqlalchemy.create_engine": Value("engine"),
    "sqlalchemy.engine.create_engine": Value("engine"),
    "sqlalchemy.ext.asyncio.create_async_engine": ASYNC_ENGINE,
    "sqlalchemy.ext.asyncio.engine.create_async_engine": ASYNC_ENGINE,
    "sqlalchemy.ext.asyncio.async_engine_from_config": ASYNC_ENGINE,
    "sqlalchemy.ext.asyncio.engine.async_engine_from_config": ASYNC_ENGINE,
    "sqlalchemy.orm.declarative_base": Value("base"),
    "sqlalchemy.ext.declarative.declarative_base": Value("base"),
    "sqlite3.connect": Value("dbapi_conn"),
    "psycopg2.connect": Value("dbapi_conn"),
    "psycopg.connect": Value("dbapi_conn"),
    "pymysql.connect": Value("dbapi_conn"),
    "MySQLdb.connect": Value("dbapi_conn"),
    "mysql.connector.connect": Value("dbapi_conn"),
    "sqlalchemy.Table": Value("table"),
    "sqlalchemy.schema.Table": Value("table"),
    # Lookalikes whose .add/.delete/.execute touch no database.
    "redis.Redis": OTHER,
    "redis.StrictRedis": OTHER,
    "redis.from_url": OTHER,
    "redis.Redis.from_url": OTHER,
    "requests.Session": OTHER,
    "requests.session": OTHER,
    "httpx.Client": OTHER,
    "flask_caching.Cache": OTHER,
    "werkzeug.contrib.cache.SimpleCache": OTHER,
    "collections.deque": OTHER,
    "collections.defaultdict": OTHER,
    "collections.OrderedDict": OTHER,
    "collections.Counter": OTHER,
    "builtins.set": OTHER,
    "builtins.frozenset": OTHER,
    "builtins.dict": OTHER,
    "builtins.list": OTHER,
}

# Classes that, used as a base, make their subclasses declarative bases or mapped classes.
DECLARATIVE_BASES = {
    "sqlalchemy.orm.DeclarativeBase",
    "sqlalchemy.orm.DeclarativeBaseNoMeta",
    "sqlalchemy.orm.decl_api.DeclarativeBase",
    "flask_sqlalchemy.model.Model",
}

# Annotations (qualified) that say a parameter or attribute is one of ours.
ANNOTATIONS: dict[str, Value] = {
    "sqlalchemy.orm.Session": SESSION,
    "sqlalchemy.orm.session.Session": SESSION,
    "sqlalchemy.orm.scoped_session": SESSION,
    "sqlalchemy.orm.scoping.scoped_session": SESSION,
    "sqlalchemy.ext.asyncio.AsyncSession": ASYNC_SESSION,
    "sqlalchemy.ext.asyncio.session.AsyncSession": ASYNC_SESSION,
    "sqlalchemy.engine.Connection": Value("core_conn"),
    "sqlalchemy.Connection": Value("core_conn"),
    "sqlalchemy.engine.Engine": Value("engine"),
    "sqlalchemy.Engine": Value("engine"),
    "sqlalchemy.ext.asyncio.AsyncConnection": ASYNC_CORE_CONN,
    "sqlalchemy.ext.asyncio.engine.AsyncConnection": ASYNC_CORE_CONN,
    "sqlalchemy.ext.asyncio.AsyncEngine": ASYNC_ENGINE,
    "sqlalchemy.ext.asyncio.engine.AsyncEngine": ASYNC_ENGINE,
    "sqlite3.Connection": Value("dbapi_conn"),
    "sqlite3.Cursor": Value("cursor"),
    "psycopg2.extensions.connection": Value("dbapi_conn"),
    "psycopg2.extensions.cursor": Value("cursor"),
    "psycopg.Connection": Value("dbapi_conn"),
    "psycopg.Cursor": Value("cursor"),
    "pymysql.connections.Connection": Value("dbapi_conn"),
    "pymysql.cursors.Cursor": Value("cursor"),
}

# Names that, with no other evidence, still say "session" (weakly) or "not a database".
SESSION_NAMES = {"session", "db_session", "dbsession", "sess", "_session", "orm_session"}
CURSOR_NAMES = {"cur", "cursor", "_cursor", "curs"}
DBAPI_CONN_NAMES = {"conn", "connection", "db_conn", "dbconn", "_conn", "con"}
