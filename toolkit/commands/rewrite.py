"""``strangler rewrite``: insert ``emit`` after each state change, in its transaction."""

from __future__ import annotations

import os

import click

from codemods import runner
from codemods.report import count_of
from codemods.detect import KINDS

from ..context import Problems, load
from .codemod_options import codemod_run, python_files, settings_from


@click.command(name="rewrite")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--diff", "diff", is_flag=True,
              help="Print a unified diff; write nothing (the default). Not with --write.")
@click.option("--write", "write", is_flag=True, help="Rewrite the files in place (atomically); print no diff. "
              "Not with --diff.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Parallel processes (default: CPU count).")
@click.option("--only", "only", default="", metavar="KINDS",
              help=f"Comma-separated kinds to rewrite: {', '.join(KINDS)}.")
@click.option("--force", is_flag=True, help="With --write: write even into files with uncommitted git changes.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="strangler.toml or pyproject.toml to read.")
@click.pass_context
def command(ctx: click.Context, paths: tuple[str, ...], diff: bool, write: bool, jobs: int | None, only: str,
            force: bool, config_file: str | None) -> None:
    """Insert emit(session, "<prefix>.<aggregate>.<verb>", entity) after each state change.

    \b
    The emit goes in the same transaction: right after the site, before any
    commit; for a wrapper that commits (a save() mixin) inside the wrapper,
    with the event type taken from the entity's class at run time. Sites whose
    transaction cannot be proven are listed as needing a decision and left
    alone. A second run changes nothing. Files that do not parse are skipped
    and listed. Exit 1 when a file was skipped or a site needs a decision.
    --diff (the default) and --write exclude each other: exit 2 with both.

    \b
    Examples:
      strangler rewrite shop/                 # show the diff
      strangler rewrite shop/ --write --jobs 4
      strangler rewrite shop/ --write --only session-add,session-delete
    """
    from codemods import report

    write = _writes(diff=diff, write=write)
    if force and not write:
        raise click.UsageError("--force only lets --write into files with uncommitted changes: pass it with --write")
    kinds = tuple(k.strip() for k in only.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise click.BadParameter(f"unknown kinds {', '.join(unknown)}; known: {', '.join(KINDS)}",
                                 param_hint="--only")
    if config_file:
        ctx.find_root().ensure_object(dict)["config_path"] = config_file
    config = load(ctx)
    settings = settings_from(config)  # before any file is read: a typo must not stop a rewrite halfway
    files = python_files(paths, config)
    if write and not force:
        dirty = runner.dirty_files(files)
        if dirty:
            listed = "\n  ".join(dirty[:20])
            raise click.UsageError(
                f"uncommitted changes in the files to rewrite (commit or stash them, or pass --force):\n  {listed}"
            )
    results = codemod_run(files, config, settings, rewrite=True, write=write, jobs=jobs or os.cpu_count() or 1,
                          only=kinds)
    for result in results:
        if result.diff:
            click.echo(result.diff, nl=False)
    changed = [r for r in results if r.changed]
    decide = [(r, s) for r in results for s in r.sites if s.action == "decide" and (not kinds or s.kind in kinds)]
    skipped = [r for r in results if r.status == "skipped"]
    for _, site in decide:
        click.echo(f"needs a decision: {site.path}:{site.line}:{site.column} {site.kind}: {site.reason}", err=True)
    for result in skipped:
        click.echo(f"skipped {result.path}:{result.line}: {result.reason}", err=True)
    counts = report.summary(results)
    verb = "rewrote" if write else "would rewrite"
    click.echo(f"{verb} {len(changed)} files; {counts['sites']} sites, {len(decide)} need a decision, "
               f"{len(skipped)} files skipped", err=True)
    if decide or skipped:
        raise Problems(f"{len(decide)} site{'s need' if len(decide) != 1 else ' needs'} a decision, "
                       f"{count_of(len(skipped), 'file')} skipped")


def _writes(*, diff: bool, write: bool) -> bool:
    """Whether to write the files; a usage error (exit 2) when both ``--diff`` and ``--write`` are given.

    They contradict each other (a write prints no diff), so both together is a mistake to report,
    not to guess at: letting the last one win would let a script that meant to preview rewrite a
    codebase.
    """
    if diff and write:
        raise click.UsageError(
            "--diff and --write exclude each other: --diff prints a unified diff and writes nothing, "
            "--write rewrites the files in place and prints no diff; pass one of them"
        )
    return write
