"""Alembic environment for running the outbox branch on its own (``strangler outbox migrate``)."""

from outbox.alembic_env import run_environment
from outbox.migrations import STANDALONE_VERSION_TABLE
from outbox.table import metadata

run_environment(metadata, STANDALONE_VERSION_TABLE)
