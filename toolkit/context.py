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
    try:
        return load_config(path, overrides={k.replace("__", "."): v for k, v in overrides.items()})
    except ConfigError as exc:
        raise click.UsageError(str(exc), ctx=ctx) from None
