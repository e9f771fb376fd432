"""Run the outbox's Alembic branch: on its own, or inside a monolith's Alembic project."""

from __future__ import annotations

import io
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine, pool

from .migrations import BRANCH, SCRIPT_DIR, STANDALONE_VERSION_TABLE, VERSION_LOCATION


class MigrationError(RuntimeError):
    """The outbox migration cannot run; the message says what to change."""


def standalone_config(db_url: str, *, table_name: str | None = None) -> AlembicConfig:
    """Return an Alembic config that runs only the outbox branch against ``db_url``."""
    cfg = AlembicConfig(stdout=io.StringIO())
    cfg.set_main_option("script_location", str(SCRIPT_DIR))
    cfg.set_main_option("version_locations", str(SCRIPT_DIR / "versions"))
    cfg.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    cfg.set_main_option("version_table", STANDALONE_VERSION_TABLE)
    cfg.set_main_option("path_separator", "os")
    if table_name:
        cfg.set_main_option("strangler.outbox_table", table_name)
    return cfg


def monolith_config(
    alembic_ini: str | Path, db_url: str | None = None, table_name: str | None = None
) -> AlembicConfig:
    """Return the monolith's Alembic config, checked to include the outbox version location.

    ``table_name`` (the configured ``outbox_table``) is what the outbox revisions create.
    """
    path = Path(alembic_ini)
    if not path.is_file():
        raise MigrationError(f"{path}: no such Alembic configuration file")
    cfg = AlembicConfig(str(path), stdout=io.StringIO())
    locations = cfg.get_version_locations_list() or []
    if not any(_is_outbox_location(loc) for loc in locations):
        raise MigrationError(
            f"{path}: version_locations does not include the outbox migrations. Add them, keeping "
            f"your own folder first, e.g.\n  version_locations = %(here)s/migrations/versions "
            f"{VERSION_LOCATION}\nand pass include_object=outbox.migrations.include_object in env.py"
        )
    if db_url:
        cfg.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    if table_name:
        cfg.set_main_option("strangler.outbox_table", table_name)
    return cfg


def _is_outbox_location(location: str) -> bool:
    if location.strip() == VERSION_LOCATION:
        return True
    try:
        return Path(location).resolve() == (SCRIPT_DIR / "versions").resolve()
    except OSError:
        return False


def upgrade(cfg: AlembicConfig, revision: str = "head", *, sql: bool = False) -> None:
    """Upgrade the outbox branch to ``revision`` (``head`` by default); ``sql`` writes the SQL instead."""
    target = f"{BRANCH}@{revision}" if revision == "head" else revision
    command.upgrade(cfg, target, sql=sql)


def ini_outbox_table(alembic_ini: str | Path) -> str | None:
    """The outbox table ``alembic.ini`` names (``strangler.outbox_table``), or None."""
    path = Path(alembic_ini)
    if not path.is_file():
        return None
    return AlembicConfig(str(path)).get_main_option("strangler.outbox_table") or None


def migrate_to(cfg: AlembicConfig, revision: str, *, sql: bool = False) -> None:
    """Bring the outbox branch to ``revision``: up (``head`` by default) or down (``base`` removes the tables).

    A revision below the branch's current one is a downgrade: an upgrade to it
    would do nothing. Offline (``sql``) nothing is read, so a revision other than
    ``base`` is written as the upgrade from an empty database.
    """
    if revision == "base":
        downgrade(cfg, "base", sql=sql)
    elif revision in ("head", "heads") or sql:
        upgrade(cfg, revision, sql=sql)
    else:
        try:
            command.downgrade(cfg, revision)  # nothing to do when the branch is at the revision already
        except CommandError as exc:
            if "not a valid downgrade target" not in str(exc):
                raise
            upgrade(cfg, revision)  # below it: go up


def downgrade(cfg: AlembicConfig, revision: str, *, sql: bool = False) -> None:
    """Downgrade the outbox branch to ``revision`` (``base`` removes the outbox tables).

    With ``sql`` the SQL is written instead; offline, Alembic needs the range to walk.
    """
    target = f"{BRANCH}@{revision}" if revision == "base" else revision
    if sql:
        target = f"{BRANCH}@head:{revision}"
    command.downgrade(cfg, target, sql=sql)


def current_revision(db_url: str) -> str | None:
    """Return the outbox branch revision applied to ``db_url`` (standalone table), or None."""
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(db_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": STANDALONE_VERSION_TABLE})
            return ctx.get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    """Return the newest revision of the outbox branch."""
    script = ScriptDirectory(str(SCRIPT_DIR), version_locations=[str(SCRIPT_DIR / "versions")])
    return script.get_current_head()
