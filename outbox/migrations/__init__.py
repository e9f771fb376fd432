"""Alembic migrations of the outbox, shipped as a version location with branch label ``strangler_outbox``.

Two ways in:

* ``strangler outbox migrate --db URL`` upgrades only this branch, recording it
  in its own version table (``strangler_alembic_version``), beside whatever
  migration tool the monolith uses.
* A monolith on Alembic adds ``outbox:migrations/versions`` to
  ``version_locations`` in its ``alembic.ini`` and runs ``alembic upgrade heads``;
  its env.py passes ``include_object=outbox.migrations.include_object`` so
  autogenerate never proposes to drop the outbox tables.
"""

from __future__ import annotations

from pathlib import Path

BRANCH = "strangler_outbox"
#: The version location, as Alembic's ``package:path`` resource notation.
VERSION_LOCATION = "outbox:migrations/versions"
SCRIPT_DIR = Path(__file__).resolve().parent
VERSIONS_DIR = SCRIPT_DIR / "versions"
STANDALONE_VERSION_TABLE = "strangler_alembic_version"

#: Prefixes of the tables strangler owns (outbox, leases, inbox, version table).
OWNED_PREFIXES = ("strangler_",)


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic ``include_object`` hook: hide strangler's tables from a monolith's autogenerate.

    Chain it with your own hook if you have one::

        def include_object(obj, name, type_, reflected, compare_to):
            return outbox.migrations.include_object(obj, name, type_, reflected, compare_to) and ...
    """
    table_name = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    if table_name and (table_name.startswith(OWNED_PREFIXES) or table_name in _configured_tables()):
        return False
    return True


def _configured_tables() -> tuple[str, ...]:
    """The outbox, leases and relays tables under the configured outbox name (``outbox_table``)."""
    outbox = table_name_for_migration()
    return (outbox, f"{outbox}_leases", f"{outbox}_relays")


def table_name_for_migration() -> str:
    """Return the outbox table name a migration should use.

    From ``strangler.outbox_table`` in the Alembic config, else ``outbox_table``
    of strangler's configuration (``strangler.toml``, then the
    ``STRANGLER_OUTBOX_TABLE`` variable), else ``strangler_outbox``: the name
    ``emit`` writes to, when ``alembic upgrade heads`` runs in the monolith.
    """
    from alembic import context

    from toolkit.config import load_config

    name = None
    try:
        config = context.config
        name = config.get_main_option("strangler.outbox_table") if config is not None else None
    except Exception:  # not inside an Alembic run (e.g. imported by a test)
        name = None
    return name or load_config().outbox_table
