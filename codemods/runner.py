"""Run scan or rewrite over many files: discovery, the index pass, parallel jobs, atomic writes.

The transform of one file never raises: it returns a ``FileResult`` whose
status is ``ok`` or ``skipped`` (with the path, line and reason). Files are
processed as a stream (``executor.map``), so only the small per-file results
are held, never the trees.
"""

from __future__ import annotations

import ast
import concurrent.futures
import dataclasses
import difflib
import fnmatch
import io
import os
import stat
import subprocess
import tempfile
import tokenize
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import libcst as cst

from . import detect, index as index_mod, insert_emit
from .detect import Settings, Site

_SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", ".tox", ".nox", ".venv", "venv", "env", "node_modules",
              ".mypy_cache", ".pytest_cache", ".ruff_cache", "build", "dist", ".eggs"}


@dataclasses.dataclass
class FileResult:
    """What happened to one file: its sites, and for a rewrite its new text or diff."""

    path: str
    status: str  # ok | skipped
    sites: list[Site] = dataclasses.field(default_factory=list)
    reason: str = ""
    line: int = 0
    diff: str = ""
    changed: bool = False
    hooks: int = 0


@dataclasses.dataclass
class Options:
    """What a run does beyond detection."""

    settings: Settings
    rewrite: bool = False
    write: bool = False
    only: tuple[str, ...] = ()
    table: str | None = None  # outbox table name when not the default
    attach_metadata: bool = True
    root: str = "."


def discover(paths: Sequence[str | Path], exclude: Sequence[str] = ()) -> list[Path]:
    """Python files under ``paths`` (files given directly are kept), minus ``exclude`` globs, sorted.

    A file reached twice (given twice, or through a symbolic link and its
    target) is kept once, under the first name reached, so a rewrite never
    edits one file twice.
    """
    out: dict[Path, Path] = {}
    for given in paths:
        path = Path(given)
        if path.is_file():
            candidates: Iterable[Path] = [path]
        else:
            candidates = _walk(path)
        for candidate in candidates:
            text = candidate.as_posix()
            if any(fnmatch.fnmatch(text, pattern) or fnmatch.fnmatch(candidate.name, pattern) for pattern in exclude):
                continue
            out.setdefault(candidate.resolve(), candidate)
    return sorted(out.values())


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in files:
            if name.endswith(".py"):
                yield Path(folder) / name


def read_source(path: Path) -> tuple[str | None, str, int, str]:
    """Return (text, encoding, 0, "") or (None, "", line, reason) when the bytes are not readable Python."""
    data = path.read_bytes()
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding), encoding, 0, ""
    except (SyntaxError, LookupError) as exc:
        return None, "", 1, (f"bad encoding declaration: {exc}; name a codec Python knows in the "
                             "'# -*- coding: ... -*-' line, or save the file as UTF-8 and drop the line")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, "", line, (f"not valid {exc.encoding}: {exc.reason}; save the file as {exc.encoding}, or "
                                "declare the encoding it is in on its first line ('# -*- coding: latin-1 -*-')")


# -- the index pass ------------------------------------------------------------------------------


def _facts(path: Path) -> index_mod.ModuleFacts | None:
    try:
        text, _, _, _ = read_source(path)
    except OSError:
        return None
    return None if text is None else index_mod.facts_of(text, path)


def index_scope(files: Sequence[Path]) -> list[Path]:
    """The files the index reads for ``files``: them, and the rest of the code their imports can name.

    For a file in a package that is its whole top-level package; for a
    module outside any package, the modules beside it. Scanning one file or
    one subfolder (a pre-commit hook on changed files, a migration module by
    module) then resolves the session factory, the models and the helpers
    that live elsewhere in the package, as a scan of the whole tree does;
    without them a write through ``SessionLocal`` imported from ``db.py``
    would go unseen.
    """
    given = {f.resolve() for f in files}
    roots: set[tuple[Path, bool]] = set()
    for path in files:
        folder = path.absolute().parent
        if not (folder / "__init__.py").is_file():
            roots.add((folder, False))
            continue
        while (folder.parent / "__init__.py").is_file() and folder.parent != folder:
            folder = folder.parent
        roots.add((folder, True))
    extra: dict[Path, Path] = {}
    for folder, recursive in sorted(roots):
        candidates = _walk(folder) if recursive else (p for p in sorted(folder.glob("*.py")) if p.is_file())
        for candidate in candidates:
            real = candidate.resolve()
            if real not in given:
                extra.setdefault(real, candidate)
    return [*files, *sorted(extra.values())]


def build_index(files: Sequence[Path], jobs: int = 1) -> index_mod.Index:
    """The whole-repo index of ``files`` (declarations only)."""
    index = index_mod.Index()
    for facts in _map(_facts, files, jobs, None):
        if facts is not None:
            index.add(facts)
    return index


# -- one file ------------------------------------------------------------------------------------

_STATE: dict = {}


def _init(index: index_mod.Index, options: Options) -> None:
    _STATE["index"] = index
    _STATE["options"] = options


def _process(path: Path) -> FileResult:
    return process_file(path, _STATE["index"], _STATE["options"])


def _syntax_error(text: str, shown: str, exc: cst.ParserSyntaxError) -> tuple[int, str]:
    """The line and reason to report for a file libcst cannot parse.

    libcst names where its parser stopped, often the line after the mistake
    (an unclosed parenthesis is reported where the next line starts); Python's
    own compiler names the line a user's editor and CI point at. A file Python
    compiles but libcst does not is newer syntax than libcst knows.
    """
    try:
        compile(text, shown, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as python:
        return python.lineno or exc.raw_line, f"does not parse as Python 3: {python.msg}"
    except (ValueError, RecursionError):  # null bytes, nesting too deep: libcst's words will do
        pass
    else:
        return exc.raw_line, f"libcst cannot parse it (newer syntax than it knows?): {exc.message}"
    return exc.raw_line, f"does not parse as Python 3: {exc.message}"


def process_file(path: Path, index: index_mod.Index, options: Options) -> FileResult:
    """Scan (and, with ``options.rewrite``, rewrite) one file; never raises for a bad file."""
    shown = _display(path, options.root)
    try:
        text, encoding, line, reason = read_source(path)
    except OSError as exc:
        return FileResult(path=shown, status="skipped", reason=f"cannot read: {exc.strerror}")
    if text is None:
        return FileResult(path=shown, status="skipped", line=line, reason=reason)
    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        line, reason = _syntax_error(text, shown, exc)
        return FileResult(path=shown, status="skipped", line=line, reason=reason)
    except Exception as exc:  # libcst raises a few other errors on odd input
        return FileResult(path=shown, status="skipped", line=1, reason=f"does not parse: {exc}")
    modname, _ = index_mod.module_name(path)
    findings = detect.detect(module, shown, modname, index, options.settings)
    result = FileResult(path=shown, status="ok", sites=[f.site for f in findings])
    if not options.rewrite:
        return result
    edits = [
        f.edit for f in findings
        if f.edit is not None and f.site.action == "rewrite" and (not options.only or f.site.kind in options.only)
    ]
    hooks = insert_emit.table_hooks(module, modname, index, options.table) if options.attach_metadata else []
    if not edits and not hooks:
        return result
    try:
        new_text = insert_emit.apply(module, edits, hooks).code
    except Exception as exc:  # a transform that fails leaves the file as it was
        return FileResult(path=shown, status="skipped", line=1, reason=f"rewrite failed: {exc}",
                          sites=result.sites)
    if new_text == text:
        return result
    result.changed = True
    result.hooks = len(hooks)
    if options.write:
        if not _writable(path):
            return dataclasses.replace(
                result, status="skipped", line=1, changed=False, hooks=0,
                reason="read-only: left as it was; make it writable (chmod u+w) to rewrite it",
            )
        try:
            write_atomically(path, new_text, encoding)
        except OSError as exc:
            return dataclasses.replace(
                result, status="skipped", line=1, changed=False, hooks=0,
                reason=f"cannot write: {exc.strerror or exc}; the file is as it was",
            )
    else:
        result.diff = "".join(
            difflib.unified_diff(text.splitlines(True), new_text.splitlines(True), f"a/{shown}", f"b/{shown}")
        )
    return result


def _writable(path: Path) -> bool:
    """Whether the file may be rewritten: writable by this user, and not marked read-only by its owner.

    The owner's write bit counts even for root, who may write anything: a
    file checked in read-only (Perforce, a vendored copy) is left alone.
    """
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & stat.S_IWUSR)


def _display(path: Path, root: str) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:
        return path.as_posix()


def write_atomically(path: Path, text: str, encoding: str) -> None:
    """Replace ``path`` with ``text`` via a temporary file in the same folder and ``os.replace``.

    The new file keeps the old one's mode and, where this process may set
    them, its owner and group (a rewrite run with sudo, or in a container on a
    bind mount, would otherwise hand the file to root). A symbolic link stays
    a link: its target is what is replaced.
    """
    path = path.resolve()
    data = text.encode(encoding)
    old = path.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".strangler", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
            try:
                os.chown(tmp, old.st_uid, old.st_gid)
            except PermissionError:
                pass  # only root may give a file away: it becomes this user's, as any editor's save would
        os.chmod(tmp, old.st_mode & 0o7777)  # after chown, which may clear set-id bits
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- many files ----------------------------------------------------------------------------------


def _map(func: Callable, items: Sequence, jobs: int, initargs: tuple | None) -> Iterator:
    if jobs <= 1 or len(items) < 2:
        if initargs is not None:
            _init(*initargs)
        yield from map(func, items)
        return
    chunk = max(1, min(16, len(items) // (jobs * 4) or 1))
    kwargs = {"initializer": _init, "initargs": initargs} if initargs is not None else {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, **kwargs) as pool:
        yield from pool.map(func, items, chunksize=chunk)


def run(files: Sequence[Path], options: Options, jobs: int = 1,
        progress: Callable[[int, int], None] | None = None) -> Iterator[FileResult]:
    """Index ``files`` (and the rest of their packages), then scan or rewrite each; one result per file, in order."""
    index = build_index(index_scope(files), jobs)
    for done, result in enumerate(_map(_process, files, jobs, (index, options)), 1):
        if progress is not None:
            progress(done, len(files))
        yield result


def dirty_files(files: Sequence[Path]) -> list[str]:
    """Those of ``files`` that git reports as modified or untracked; [] outside a git work tree."""
    if not files:
        return []
    top = Path(files[0]).resolve().parent
    try:
        root = subprocess.run(["git", "-C", str(top), "rev-parse", "--show-toplevel"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return []
    wanted = {str(Path(f).resolve()) for f in files}
    out = subprocess.run(["git", "-C", root, "status", "--porcelain", "-z", "--untracked-files=all"],
                         capture_output=True, text=True, check=False).stdout
    dirty = []
    for entry in out.split("\0"):
        if len(entry) > 3:
            full = str((Path(root) / entry[3:]).resolve())
            if full in wanted:
                dirty.append(full)
    return sorted(dirty)
