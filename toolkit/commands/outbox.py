"""``strangler outbox``: create the outbox table and look after its rows."""

from __future__ import annotations

import datetime
import io
import json
import re

import click
from sqlalchemy import create_engine, event, make_url, pool
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, ProgrammingError

from ..context import Problems, load


@click.group(name="outbox")
def command() -> None:
    """Create the outbox table and look after its rows.

    \b
    Examples:
      strangler outbox migrate --db postgresql+psycopg://app@db/shop
      strangler outbox status --db postgresql+psycopg://app@db/shop
      strangler outbox retry --db postgresql+psycopg://app@db/shop        # every dead row
      strangler outbox purge --db postgresql+psycopg://app@db/shop --published-before 7d
    """


def engine_for(url: str, *, creates: str | None = None, connect_args: dict | None = None):
    """Return an engine for ``url``, turning a malformed URL or missing driver into a usage error.

    Every command opens its database here, so this is also where a database
    that cannot be reached, or that lacks the outbox's tables, gets a message
    that says so and what to do (``DatabaseUnusable``) instead of a driver's
    error with SQL in it. SQLite makes a missing file on connecting: only a
    command that ``creates`` tables (its name, for the message) may start on
    one; for the others a missing file is a mistyped path, which would be
    left behind empty with advice to migrate it.
    """
    if not url:
        raise click.UsageError("no database: pass --db URL or set db in strangler.toml (STRANGLER_DB)")
    try:
        engine = create_engine(url, poolclass=pool.NullPool, connect_args=connect_args or {})
    except (ArgumentError, NoSuchModuleError) as exc:
        raise click.UsageError(
            f"the database URL {safe_url(url)!r} (--db, or db in strangler.toml, or STRANGLER_DB) is not a usable "
            f"SQLAlchemy URL ({exc}); e.g. sqlite:///shop.db, "
            "postgresql+psycopg://user@host/db, mysql+pymysql://user@host/db"
        ) from None
    except ImportError as exc:
        raise click.UsageError(f"the driver for {safe_url(url)!r} is not installed ({exc}): {_driver_hint(url)}") from None
    if creates is None:
        _require_sqlite_file(engine)
    event.listen(engine, "handle_error", _explain_database_error)
    return engine


def _require_sqlite_file(engine) -> None:
    """A usage error when ``engine`` is a SQLite database in a file that does not exist."""
    from outbox.sqlite_paths import sqlite_file

    url = engine.url.render_as_string(hide_password=False)
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise click.UsageError(
            f"the database file {engine.url.database} does not exist ({path}): check the path; a new "
            "database is made by 'strangler outbox migrate' (or 'strangler inbox migrate' for a service's inbox)"
        )


#: The drivers strangler's extras install, by the URL's dialect.
_EXTRA_DRIVERS = {"postgresql": ("psycopg", "postgres"), "mysql": ("pymysql", "mysql"), "mariadb": ("pymysql", "mysql")}


def _driver_hint(url: str) -> str:
    """What to install, or which URL to write: a bare ``mysql://`` asks for MySQLdb, which no extra installs."""
    scheme = url.split("://", 1)[0]
    dialect, _, driver = scheme.partition("+")
    if dialect in _EXTRA_DRIVERS:
        wanted, extra = _EXTRA_DRIVERS[dialect]
        if driver != wanted:
            return f"write {dialect}+{wanted}://… (pip install 'strangler[{extra}]' installs {wanted})"
        return f"pip install 'strangler[{extra}]'"
    return "install the driver the URL names"


class DatabaseUnusable(Problems):
    """The database cannot be reached, or lacks a table or column of the outbox: the message says which."""


def safe_url(url) -> str:
    """``url`` as it may be shown: the password, if any, replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return str(url)  # not a URL at all: nothing to hide that a parser could find


def reach(engine) -> None:
    """Open and close one connection: raise ``DatabaseUnusable`` (why) when the database cannot be reached."""
    with engine.connect():
        pass


_MISSING = [
    ("table", re.compile(r"no such table: (\S+)")),  # SQLite
    ("table", re.compile(r'relation "([^"]+)" does not exist')),  # PostgreSQL
    ("table", re.compile(r"Table '(?:[^'.]*\.)?([^']+)' doesn't exist")),  # MariaDB, MySQL
    ("column", re.compile(r"no such column: (\S+)")),
    ("column", re.compile(r'column "?([\w.]+)"? does not exist')),
    ("column", re.compile(r"Unknown column '([^']+)'")),
]


#: A consumer's tables (outbox.inbox), made by ``strangler inbox migrate``, not ``outbox migrate``.
_INBOX_TABLES = ("strangler_inbox", "strangler_dead_letters")


def _explain_database_error(context: ExceptionContext) -> DatabaseUnusable | None:
    """Replace a failed connect, or a missing table or column, with an error that says what to do.

    A ``handle_error`` hook on every engine ``engine_for`` makes; other errors
    are left as they are.
    """
    if context.sqlalchemy_exception is None or context.is_pre_ping:
        return None
    url = safe_url(context.engine.url) if context.engine is not None else "the database"
    reason = " ".join(str(context.original_exception).split())
    if context.connection is None:  # the error came while connecting
        if context.dialect.name == "sqlite":
            return DatabaseUnusable(f"cannot open the database {url}: {reason} (does its folder exist, "
                                    "and may this user write there?)")
        return DatabaseUnusable(f"cannot reach the database {url}: {reason}")
    hint = missing_table_hint(f"the database {url}", reason, url_placeholder=url)
    return DatabaseUnusable(hint) if hint else None


def missing_table_hint(database: str, reason: str, *, url_placeholder: str) -> str | None:
    """What to run when ``reason`` (a driver's message) says a table or column is missing; None otherwise.

    The inbox's tables are made by ``strangler inbox migrate``, the rest by ``outbox migrate``.
    """
    for kind, pattern in _MISSING:
        found = pattern.search(reason)
        if found:
            if found[1].strip('"`').startswith(_INBOX_TABLES):
                return (f"{database} has no {kind} {found[1]}: run 'strangler inbox migrate --db {url_placeholder}' "
                        "to create or upgrade the inbox tables")
            return (f"{database} has no {kind} {found[1]}: run 'strangler outbox migrate --db {url_placeholder}' "
                    "to create or upgrade the outbox tables")
    return None


@command.command("migrate")
@click.option("--db", help="SQLAlchemy URL of the monolith's database (default: db from config).")
@click.option(
    "--alembic-ini",
    type=click.Path(dir_okay=False),
    help="The monolith's alembic.ini: record the outbox revisions in its own history.",
)
@click.option(
    "--to",
    "revision",
    default="head",
    show_default=True,
    help="Target revision of the outbox branch; 'base' removes the outbox tables.",
)
@click.option("--sql", "offline", is_flag=True,
              help="Print the SQL instead of running it, from an empty database up to --to, "
                   "whatever the database holds (the database is not read).")
@click.pass_context
def migrate_command(ctx: click.Context, db: str | None, alembic_ini: str | None, revision: str, offline: bool):
    """Create or upgrade the outbox tables (Alembic branch 'strangler_outbox').

    \b
    Without --alembic-ini the outbox branch keeps its own version table
    (strangler_alembic_version), so it fits beside any migration tool.
    With --alembic-ini it runs inside the monolith's Alembic project, whose
    version_locations must list outbox:migrations/versions.

    \b
    Examples:
      strangler outbox migrate --db sqlite:///shop.db
      strangler outbox migrate --alembic-ini alembic.ini --db sqlite:///shop.db
      strangler outbox migrate --db sqlite:///shop.db --to base
    """
    from alembic.util import CommandError

    from outbox import migrate

    config = load(ctx, db=db)
    if alembic_ini:
        ini_table = migrate.ini_outbox_table(alembic_ini)
        if ini_table and ini_table != config.outbox_table:
            # emit and the relay read strangler's configuration, never alembic.ini: tables made under
            # another name would leave every emit failing at commit with "no such table".
            raise click.UsageError(
                f"{alembic_ini} sets strangler.outbox_table = {ini_table}, but strangler's configuration "
                f"({config.origin}) names {config.outbox_table!r}, which emit and the relay write and read: "
                f"set outbox_table = '{ini_table}' in strangler.toml (or STRANGLER_OUTBOX_TABLE) too"
            )
    try:
        if alembic_ini:
            cfg = migrate.monolith_config(alembic_ini, config.db or None, table_name=config.outbox_table)
        else:
            engine = engine_for(config.db, creates="outbox migrate")
            try:
                if not offline:
                    reach(engine)  # say why the database cannot be reached, before Alembic tries
            finally:
                engine.dispose()
            cfg = migrate.standalone_config(config.db, table_name=config.outbox_table)
        if offline:
            cfg.output_buffer = io.StringIO()
        migrate.migrate_to(cfg, revision, sql=offline)
    except migrate.MigrationError as exc:
        raise click.UsageError(str(exc)) from None
    except (OperationalError, ProgrammingError) as exc:
        reason = " ".join(str(exc.orig).split())
        if "already exists" in reason:
            raise Problems(_made_the_other_way(reason, alembic_ini)) from None
        raise Problems(f"migration failed: {reason}") from None
    except CommandError as exc:
        raise Problems(f"migration failed: {exc}") from None
    if offline:
        click.echo(cfg.output_buffer.getvalue())
    else:
        where = alembic_ini or "its own version table"
        click.echo(f"outbox branch at {revision} ({where})", err=True)


def _made_the_other_way(reason: str, alembic_ini: str | None) -> str:
    """The fix for outbox tables that exist but that the version table used now does not record."""
    head = "strangler_0005"
    try:
        from outbox.migrate import head_revision

        head = head_revision()
    except Exception:  # the message still helps without the exact revision
        pass
    if alembic_ini:
        return (f"migration failed: {reason}. The outbox tables were made by 'strangler outbox migrate' on its "
                f"own (version table strangler_alembic_version), not in this Alembic history: record them in it "
                f"with 'alembic -c {alembic_ini} stamp {head}' (the revision they are at: 'strangler outbox "
                "status' works, or read strangler_alembic_version), then drop strangler_alembic_version")
    return (f"migration failed: {reason}. The outbox tables were made inside the monolith's Alembic history "
            f"(alembic_version): migrate them there, with 'strangler outbox migrate --alembic-ini alembic.ini' "
            "or 'alembic upgrade heads'")


@command.command("status")
@click.option("--db", help="SQLAlchemy URL of the database holding the outbox.")
@click.option("--json", "as_json", is_flag=True, help="Write the counts as one JSON object.")
@click.option("--dead", "dead_limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="How many dead rows (and how many rows failing and retrying) to list.")
@click.pass_context
def status_command(ctx: click.Context, db: str | None, as_json: bool, dead_limit: int):
    """Show pending, published and dead rows, the age of the oldest pending one, and rows failing.

    A pending row that failed to publish (a key missing, a payload the broker
    refuses) is listed with its attempts, its error and its next attempt: it
    holds back its aggregate's later rows until it publishes or goes dead.

    \b
    Exit code 1 when there are dead rows (they need 'strangler outbox retry').

    \b
    Example:
      strangler outbox status --db sqlite:///shop.db --json
    """
    from outbox.status import outbox_status

    config = load(ctx, db=db)
    engine = engine_for(config.db)
    try:
        with engine.connect() as conn:
            status = outbox_status(conn, config.outbox_table, dead_limit=dead_limit)
    except (OperationalError, ProgrammingError) as exc:
        raise Problems(f"cannot read the outbox table {config.outbox_table!r}: {exc.orig}") from None
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(status.as_dict(), indent=2))
    else:
        age = status.oldest_pending_age_seconds
        click.echo(f"pending    {status.pending}" + (f"  (oldest {age:.1f}s old)" if age is not None else ""))
        if status.retrying:
            click.echo(f"  of which {status.retrying} failing, retried (each holds back its aggregate):")
        for row in status.retrying_rows:
            click.echo(
                f"  failing #{row['position']} {row['type']} {row['aggregatetype']}/{row['aggregateid']} "
                f"after {row['attempts']} attempt(s), next at {row['next_attempt_at'] or 'once due'}: {row['last_error']}"
            )
        click.echo(f"published  {status.published}")
        click.echo(f"dead       {status.dead}")
        for row in status.dead_rows:
            click.echo(
                f"  dead #{row['position']} {row['type']} {row['aggregatetype']}/{row['aggregateid']} "
                f"after {row['attempts']} attempts: {row['last_error']}"
            )
    if status.dead:
        ctx.exit(1)


@command.command("retry")
@click.option("--db", help="SQLAlchemy URL of the database holding the outbox.")
@click.option("--id", "ids", multiple=True, help="Event id of a dead row to retry (repeatable); default: all dead rows.")
@click.option("--type", "event_type", help="Retry only dead rows of this event type.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Rows changed per transaction.")
@click.option("--json", "as_json", is_flag=True, help="Write the result as one JSON object.")
@click.pass_context
def retry_command(ctx: click.Context, db: str | None, ids: tuple[str, ...], event_type: str | None,
                  batch_size: int, as_json: bool):
    """Make dead rows pending again, so the relay publishes them (attempts reset).

    \b
    Examples:
      strangler outbox retry --db sqlite:///shop.db
      strangler outbox retry --db sqlite:///shop.db --id 0190a1b2-...
    """
    from outbox.maintenance import retry_dead

    config = load(ctx, db=db)
    engine = engine_for(config.db)
    try:
        result = retry_dead(engine, table_name=config.outbox_table, ids=list(ids) or None,
                            event_type=event_type, batch_size=batch_size)
    except (OperationalError, ProgrammingError) as exc:
        raise Problems(f"cannot update the outbox table {config.outbox_table!r}: {exc.orig}") from None
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"retried": result.rows, "batches": result.batches}))
    else:
        click.echo(f"{result.rows} dead rows are pending again")
    if ids and result.rows < len(set(ids)):
        raise Problems(f"{len(set(ids)) - result.rows} of the given ids are not dead rows")


def _cutoff(value: str, param_hint: str = "--published-before") -> datetime.datetime:
    """Return the time an age (7d, 12h, 30m, 45s: that long ago) or an RFC 3339 time names."""
    import datetime as dt
    import re

    match = re.fullmatch(r"(\d+)([smhd])", value.strip())
    if match:
        seconds = int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: expected an age such as 7d, 12h, 30m, or an RFC 3339 time such as 2026-01-31T00:00:00Z",
            param_hint=param_hint,
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


@command.command("purge")
@click.option("--db", help="SQLAlchemy URL of the database holding the outbox.")
@click.option("--published-before", required=True,
              help="Delete rows published before this: an age (7d, 12h, 30m) or an RFC 3339 time.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Rows deleted per transaction (never one unbounded DELETE).")
@click.option("--max-batches", type=click.IntRange(min=1), help="Stop after this many batches (run again to go on).")
@click.option("--json", "as_json", is_flag=True, help="Write the result as one JSON object.")
@click.pass_context
def purge_command(ctx: click.Context, db: str | None, published_before: str, batch_size: int,
                  max_batches: int | None, as_json: bool):
    """Delete published rows older than a cutoff, in bounded batches; pending and dead rows stay.

    \b
    Examples:
      strangler outbox purge --db sqlite:///shop.db --published-before 7d
      strangler outbox purge --db sqlite:///shop.db --published-before 2026-01-01T00:00:00Z --batch-size 500
    """
    from outbox.maintenance import purge_published

    cutoff = _cutoff(published_before)
    config = load(ctx, db=db)
    engine = engine_for(config.db)
    try:
        result = purge_published(engine, cutoff, table_name=config.outbox_table, batch_size=batch_size,
                                 max_batches=max_batches)
    except (OperationalError, ProgrammingError) as exc:
        raise Problems(f"cannot delete from the outbox table {config.outbox_table!r}: {exc.orig}") from None
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"purged": result.rows, "batches": result.batches, "published_before": cutoff.isoformat()}))
    else:
        click.echo(f"purged {result.rows} rows published before {cutoff.isoformat()} in {result.batches} batches")
