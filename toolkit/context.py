"""Shared CLI plumbing: configuration loading and error rendering with exit codes."""

from __future__ import annotations

from typing import Any

import click

from .config import Config, ConfigError, load_config


class Problems(click.ClickException):
    """The command ran and found problems: exit code 1."""

    exit_code = 1


def load(ctx: click.Context, **overrides: Any) -> Config:
    """Load the configuration for this invocation; flags given win (dotted keys)."""
    root = ctx.find_root()
    path = (root.obj or {}).get("config_path")
    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    try:
        return load_config(path, overrides=dotted, flags=_flags_of(ctx, dotted))
    except ConfigError as exc:
        raise click.UsageError(str(exc), ctx=ctx) from None


def _flags_of(ctx: click.Context, dotted: dict[str, Any]) -> dict[str, str]:
    """The option of this command each override came from (``relay.batch`` -> ``--batch``), for error messages.

    An override's option is the one of this command whose parameter name is
    the key's last part, or the whole key with underscores (``--outage-max``
    for ``relay.outage_max``), and whose value is the override's.
    """
    out = {}
    for key, value in dotted.items():
        if value is None:
            continue
        names = {key.rsplit(".", 1)[-1], key.replace(".", "_")}
        for param in ctx.command.params:
            if isinstance(param, click.Option) and param.name in names and ctx.params.get(param.name) == value:
                out[key] = max(param.opts, key=len)
                break
    return out
