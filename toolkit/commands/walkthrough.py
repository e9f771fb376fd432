"""``strangler walkthrough``: the legacy shop migrated to its first extracted service, end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("walkthrough")
@click.option("--router", default="file://./events", show_default=True,
              help="Router URL the relay publishes to and the service reads from.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Work folder, new or empty (default: a new temporary folder, removed afterwards unless --keep).")
@click.option("--keep", is_flag=True, help="Keep the temporary work folder to look around afterwards.")
@click.pass_context
def command(ctx: click.Context, router: str, workdir: str | None, keep: bool) -> None:
    """Walk a legacy shop to its first extracted service, checking every step.

    \b
    Copies the sample monolith, runs its tests, records the e-mails checkout
    sends inline; scans and rewrites it to emit events through the outbox;
    migrates the outbox into its Alembic history; makes keys and a policy;
    starts the relay and the notifications service; switches the inline
    e-mail off and checks the service sent the same e-mails, none twice, and
    that no customer e-mail is in plaintext in the outbox, the router or the logs.
    Exit code 0 only if every check held.

    \b
    Examples:
      strangler walkthrough
      strangler walkthrough --workdir ./shop-migration
      strangler walkthrough --router redis://127.0.0.1:6379/0
    """
    from ..walkthrough import run_walkthrough

    if workdir is not None and Path(workdir).is_dir() and any(Path(workdir).iterdir()):
        # The checks count what this run makes (e-mails, events, keys); a previous run's would count too.
        raise click.UsageError(
            f"--workdir {workdir} is not empty (a previous walkthrough?): remove it or name a new folder"
        )
    code = run_walkthrough(workdir, router, sys.stdout, keep=keep)
    ctx.exit(code)
