"""What ``scan`` and ``rewrite`` share: settings from the config, a progress line, the run itself."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import click

from codemods import runner
from codemods.detect import Settings, settings_problems

from ..config import Config


def settings_from(config: Config) -> Settings:
    """The detector's settings from the ``[codemods]`` section; a usage error (exit 2) when an entry is misspelt."""
    section = config.codemods
    settings = Settings(
        prefix=section.event_prefix,
        verbs=section.verbs,
        event_types=tuple(section.event_types),
        skip_kinds=tuple(section.skip_kinds),
        skip=tuple(section.skip),
        skip_functions=tuple(section.skip_functions),
    )
    problems = settings_problems(settings)
    if problems:
        raise click.UsageError("invalid configuration:\n  " + "\n  ".join(problems))
    return settings


def _progress(done: int, total: int) -> None:
    sys.stderr.write(f"\r{done}/{total} files")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def python_files(paths: Sequence[str], config: Config) -> list[Path]:
    """The Python files under ``paths``, minus ``codemods.exclude``; a usage error when there are none."""
    files = runner.discover(paths, config.codemods.exclude)
    if not files:
        raise click.UsageError(f"no Python files under {' '.join(paths)}")
    return files


def codemod_run(files: Sequence[Path], config: Config, settings: Settings, *, rewrite: bool, write: bool,
                jobs: int, only: Sequence[str]) -> list[runner.FileResult]:
    """Scan or rewrite ``files`` with ``settings`` (from ``settings_from``); results in path order."""
    root = _common_root(files)
    options = runner.Options(
        settings=settings,
        rewrite=rewrite,
        write=write,
        only=tuple(only),
        table=None if config.outbox_table == "strangler_outbox" else config.outbox_table,
        attach_metadata=config.codemods.attach_metadata,
        root=str(root),
    )
    progress = _progress if sys.stderr.isatty() else None
    return list(runner.run(files, options, jobs=jobs, progress=progress))


def _common_root(files: Sequence[Path]) -> Path:
    """The folder paths are shown relative to: the current folder when it holds them all."""
    cwd = Path.cwd().resolve()
    resolved = [f.resolve() for f in files]
    if all(cwd in f.parents for f in resolved):
        return cwd
    first = resolved[0].parent
    for candidate in (first, *first.parents):
        if all(candidate in f.parents for f in resolved):
            return candidate
    return Path("/")
