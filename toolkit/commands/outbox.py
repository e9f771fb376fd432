"""``strangler outbox``: create the outbox table and look after its rows."""

from __future__ import annotations

import json

import click
from sqlalchemy import create_engine, pool
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, ProgrammingError

from ..context import Problems, load


@click.group(name="outbox")
def command() -> None:
    """Create the outbox table and look after its rows."""


def engine_for(url: str):
    """Return an engine for ``url``, turning a malformed URL or missing driver into a usage error."""
    if not url:
        raise click.UsageError("no database: pass --db URL or set db in strangler.toml (STRANGLER_DB)")
    try:
        return create_engine(url, poolclass=pool.NullPool)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise click.UsageError(
            f"--db {url!r} is not a usable SQLAlchemy URL ({exc}); e.g. sqlite:///shop.db, "
            "postgresql+psycopg://user@host/db, mysql+pymysql://user@host/db"
        ) from None
    except ImportError as exc:
        raise click.UsageError(
            f"the driver for {url!r} is not installed ({exc}): pip install 'strangler[postgres]' "
            "or 'strangler[mysql]'"
        ) from None


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
@click.option("--sql", "offline", is_flag=True, help="Print the SQL instead of running it.")
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
    from outbox import migrate

    config = load(ctx, db=db)
    try:
        if alembic_ini:
            cfg = migrate.monolith_config(alembic_ini, config.db or None)
        else:
            engine_for(config.db).dispose()
            cfg = migrate.standalone_config(config.db, table_name=config.outbox_table)
        cfg.cmd_opts = None
        if revision == "base":
            migrate.downgrade(cfg, "base") if not offline else _offline(cfg, "base", down=True)
        elif offline:
            _offline(cfg, revision)
        else:
            migrate.upgrade(cfg, revision)
    except migrate.MigrationError as exc:
        raise click.UsageError(str(exc)) from None
    except OperationalError as exc:
        raise Problems(f"cannot reach the database: {exc.orig}") from None
    except Exception as exc:  # alembic's CommandError and friends
        if type(exc).__name__ == "CommandError":
            raise Problems(f"migration failed: {exc}") from None
        raise
    if not offline:
        where = alembic_ini or "its own version table"
        click.echo(f"outbox branch at {revision} ({where})", err=True)


def _offline(cfg, revision: str, *, down: bool = False) -> None:
    import io

    from alembic import command as alembic_command

    buffer = io.StringIO()
    cfg.output_buffer = buffer
    if down:
        alembic_command.downgrade(cfg, "strangler_outbox@head:base", sql=True)
    else:
        alembic_command.upgrade(cfg, f"strangler_outbox@{revision}" if revision == "head" else revision, sql=True)
    click.echo(buffer.getvalue())


@command.command("status")
@click.option("--db", help="SQLAlchemy URL of the database holding the outbox.")
@click.option("--json", "as_json", is_flag=True, help="Write the counts as one JSON object.")
@click.option("--dead", "dead_limit", default=20, show_default=True, help="How many dead rows to list.")
@click.pass_context
def status_command(ctx: click.Context, db: str | None, as_json: bool, dead_limit: int):
    """Show pending, published and dead rows, and the age of the oldest pending one.

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
        raise Problems(
            f"cannot read the outbox table {config.outbox_table!r}: {exc.orig}. "
            "Has 'strangler outbox migrate' run on this database?"
        ) from None
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(status.as_dict(), indent=2))
    else:
        age = status.oldest_pending_age_seconds
        click.echo(f"pending    {status.pending}" + (f"  (oldest {age:.1f}s old)" if age is not None else ""))
        click.echo(f"published  {status.published}")
        click.echo(f"dead       {status.dead}")
        for row in status.dead_rows:
            click.echo(
                f"  dead #{row['position']} {row['type']} {row['aggregatetype']}/{row['aggregateid']} "
                f"after {row['attempts']} attempts: {row['last_error']}"
            )
    if status.dead:
        ctx.exit(1)
