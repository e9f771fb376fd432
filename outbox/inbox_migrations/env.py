"""Alembic environment for running the inbox branch on its own (``outbox.inbox.upgrade``)."""

from outbox.alembic_env import run_environment
from outbox.inbox import metadata
from outbox.inbox_migrations import STANDALONE_VERSION_TABLE

run_environment(metadata, STANDALONE_VERSION_TABLE)
