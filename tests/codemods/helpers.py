"""``assert_codemod``: the before/after pairs that specify the rewrite, in LibCST's style."""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path

from codemods import runner
from codemods.detect import Settings

MODELS = '''
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()


class CRUDMixin:
    def save(self, commit=True):
        db.session.add(self)
        if commit:
            db.session.commit()
        return self


class User(CRUDMixin, db.Model):
    __tablename__ = "users"
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String)
    orders = db.relationship("Order")


class Order(db.Model):
    __tablename__ = "orders"
    id = db.Column(db.Integer, primary_key=True)
    status = db.Column(db.String)
'''


#: A Flask view that adds a user and commits: one site, app.user.created.
SIGN_UP = '''
from .models import db, User


def sign_up(name):
    user = User(name=name)
    db.session.add(user)
    db.session.commit()
'''


def invoke(*args):
    """Run ``strangler`` with ``args`` in-process; exceptions propagate."""
    from click.testing import CliRunner

    from toolkit.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    for folder in {(root / rel).parent for rel in files}:
        while folder != root:
            (folder / "__init__.py").touch()
            folder = folder.parent


def run_on(root: Path, target: str, *, write: bool = False, rewrite: bool = True, **settings) -> runner.FileResult:
    files = runner.discover([root])
    index = runner.build_index(files)
    options = runner.Options(settings=Settings(prefix="app", **settings), rewrite=rewrite, write=write,
                             root=str(root), attach_metadata=False)
    return runner.process_file(root / target, index, options)


def rewrite_code(source: str, *, runs: int = 1) -> tuple[list[runner.FileResult], str]:
    """Rewrite ``source`` as ``app/code.py`` of a fresh tree beside ``MODELS``, ``runs`` times.

    Return each run's result and the file's text after the last; for the
    property tests, which rewrite many generated sources.
    """
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_tree(root, {"app/models.py": MODELS, "app/code.py": ""})
        (root / "app" / "code.py").write_text(source)
        results = [run_on(root, "app/code.py", write=True) for _ in range(runs)]
        return results, (root / "app" / "code.py").read_text()


def assert_codemod(tmp_path: Path, before: str, after: str, *, extra: dict[str, str] | None = None,
                   **settings) -> runner.FileResult:
    """Rewrite ``before`` (as app/code.py beside app/models.py) and compare with ``after``; then once more."""
    files = {"app/models.py": MODELS, **(extra or {}), "app/code.py": before}
    write_tree(tmp_path, files)
    result = run_on(tmp_path, "app/code.py", write=True, **settings)
    assert result.status == "ok", result.reason
    assert (tmp_path / "app/code.py").read_text() == textwrap.dedent(after)
    again = run_on(tmp_path, "app/code.py", write=True, **settings)
    assert not again.changed, "a second rewrite changed the file"
    return result
