"""``strangler outbox``: migrate, inspect and maintain the outbox table."""

from __future__ import annotations

import click

command = click.Group(name="outbox", help="Create the outbox table and look after its rows.")
