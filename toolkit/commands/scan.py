"""``strangler scan``: list every state change of a codebase, read-only."""

from __future__ import annotations

import os

import click

from ..context import load
from .codemod_options import codemod_run, python_files, settings_from


@click.command(name="scan")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text", show_default=True,
              help="text for a person, json for tools (docs/codemods.md), sarif for editors and code hosts.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json (with another --format: a usage error).")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Parallel processes (default: CPU count).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="strangler.toml or pyproject.toml to read.")
@click.pass_context
def command(ctx: click.Context, paths: tuple[str, ...], fmt: str, as_json: bool, jobs: int | None,
            config_file: str | None) -> None:
    """Find every place the code changes database state (read-only).

    \b
    Reports kind, aggregate, enclosing function, whether the commit is visible,
    whether an emit already covers it, a confidence, and what `rewrite` would do
    (rewrite, covered, decide, capture, ignored). Exit 1 when a site is neither
    covered nor ignored (rewrite or decide) or a file could not be parsed.

    \b
    Examples:
      strangler scan shop/
      strangler scan shop/ --format sarif > strangler.sarif
      strangler scan shop/ --format json | jq '.sites[] | select(.action=="decide")'
    """
    from codemods import report

    if as_json and fmt != "json" and ctx.get_parameter_source("fmt") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError(f"--json is --format json: it contradicts --format {fmt}; pass one of them")
    if config_file:
        ctx.find_root().ensure_object(dict)["config_path"] = config_file
    config = load(ctx)
    settings = settings_from(config)
    results = codemod_run(python_files(paths, config), config, settings, rewrite=False, write=False,
                          jobs=jobs or os.cpu_count() or 1, only=())
    fmt = "json" if as_json else fmt
    render = {"text": report.to_text, "json": report.to_json, "sarif": report.to_sarif}[fmt]
    click.echo(render(results), nl=fmt != "text")
    open_sites = sum(1 for r in results for s in r.sites if s.action in ("rewrite", "decide"))
    skipped = sum(1 for r in results if r.status == "skipped")
    if open_sites or skipped:
        # Exit 1 for scripts and CI; not an error to a person: a first scan finds state changes to do.
        todo = []
        if open_sites:
            todo.append(f"{report.count_of(open_sites, 'state change')} without an emit: "
                        f"'strangler rewrite {' '.join(paths)}' shows the emits it would insert")
        if skipped:
            todo.append(f"{report.count_of(skipped, 'file')} skipped: see the reasons above")
        click.echo("; ".join(todo), err=True)
        ctx.exit(1)

