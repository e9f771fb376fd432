"""Each module here adds one verb (or verb group) to the ``strangler`` command.

To add a verb, write ``toolkit/commands/<verb>.py`` exposing a click command
named ``command`` and add the module name to ``COMMANDS``.
"""

from __future__ import annotations

import importlib

import click

COMMANDS = [
    "outbox",
    "relay",
    "keys",
    "events",
    "inbox",
    "scan",
    "rewrite",
    "watch",
    "walkthrough",
    "verify",
]


def register_all(group: click.Group) -> None:
    """Attach every command module's ``command`` to ``group``."""
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        group.add_command(module.command)
