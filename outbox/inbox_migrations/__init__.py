"""Alembic migrations of a service's inbox and dead letters: branch label ``strangler_inbox``.

The inbox lives in each consuming service's database, not the monolith's, so
it is a branch of its own. Two ways in, as for the outbox:

* ``outbox.inbox.upgrade(db_url)`` upgrades only this branch, recorded in its
  own version table (``strangler_inbox_alembic_version``).
* A service on Alembic adds ``outbox:inbox_migrations/versions`` to
  ``version_locations`` and runs ``alembic upgrade heads``; its env.py passes
  ``include_object=outbox.migrations.include_object`` (it hides every
  ``strangler_*`` table from autogenerate).
"""

from __future__ import annotations

from pathlib import Path

BRANCH = "strangler_inbox"
VERSION_LOCATION = "outbox:inbox_migrations/versions"
SCRIPT_DIR = Path(__file__).resolve().parent
VERSIONS_DIR = SCRIPT_DIR / "versions"
STANDALONE_VERSION_TABLE = "strangler_inbox_alembic_version"
