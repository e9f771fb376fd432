"""The ``strangler`` command: one click group; each verb lives in ``toolkit/commands/``.

Commands are thin: they parse flags, load the configuration and call plain
functions in ``codemods`` and ``outbox`` that tests call directly. Errors carry
their exit code (0 ok, 1 problems found, 2 bad usage or configuration).
"""

from __future__ import annotations

import click

from .commands import register_all


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="strangler.toml or pyproject.toml to read (default: searched from the current folder up).",
)
@click.version_option(package_name="strangler", prog_name="strangler")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Strangle a SQLAlchemy monolith into event-driven services, one step at a time.

    \b
    Configuration comes from strangler.toml (or [tool.strangler] in pyproject.toml),
    then STRANGLER_* environment variables, then flags. See docs/configuration.md.

    \b
    Example:
      strangler outbox migrate --db sqlite:///shop.db
      strangler outbox status --db sqlite:///shop.db --json
    """
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


register_all(cli)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="strangler")
