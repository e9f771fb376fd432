"""``strangler scan`` and ``strangler rewrite`` through click's CliRunner."""

from __future__ import annotations

import json
import subprocess

from click.testing import CliRunner

from toolkit.cli import cli

from .helpers import MODELS, write_tree

CODE = '''
from .models import db, User


def sign_up(name):
    user = User(name=name)
    db.session.add(user)
    db.session.commit()
'''


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_scan_json_is_the_documented_shape_and_exit_1_for_open_sites(tmp_path):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": CODE})
    result = invoke("scan", str(tmp_path), "--format", "json", "--jobs", "1")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["version"] == 1 and doc["skipped"] == []
    site = next(s for s in doc["sites"] if s["kind"] == "session-add")
    assert set(site) == {"path", "line", "column", "kind", "aggregate", "function", "commit_visible", "covered",
                         "confidence", "action", "reason", "event_type", "code"}
    assert (site["path"].endswith("code.py"), site["line"], site["column"]) == (True, 7, 4)
    assert site["event_type"] == "app.user.created" and site["commit_visible"] is True


def test_scan_sarif_and_text(tmp_path):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": CODE})
    sarif = json.loads(invoke("scan", str(tmp_path), "--format", "sarif").stdout)
    assert sarif["version"] == "2.1.0"
    assert any(r["ruleId"] == "strangler/session-add" for r in sarif["runs"][0]["results"])
    text = invoke("scan", str(tmp_path)).stdout
    assert "session-add" in text and "user" in text


def test_rewrite_diff_writes_nothing_then_write_then_idempotent(tmp_path):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": CODE})
    before = (tmp_path / "app/code.py").read_text()
    diff = invoke("rewrite", str(tmp_path), "--jobs", "2")
    assert diff.exit_code == 0, diff.output
    assert '+    emit(db.session, "app.user.created", user)' in diff.stdout
    assert (tmp_path / "app/code.py").read_text() == before
    assert invoke("rewrite", str(tmp_path), "--write").exit_code == 0
    assert "emit(db.session" in (tmp_path / "app/code.py").read_text()
    assert "create_with(db.metadata)" in (tmp_path / "app/models.py").read_text()
    again = invoke("rewrite", str(tmp_path))
    assert again.stdout == ""
    assert invoke("scan", str(tmp_path)).exit_code == 0


def test_rewrite_skips_unparsable_files_and_exits_1(tmp_path):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": CODE, "app/old.py": "print 'hi'\n"})
    result = invoke("rewrite", str(tmp_path), "--write")
    assert result.exit_code == 1
    assert "old.py:1" in result.stderr
    assert "emit(" in (tmp_path / "app/code.py").read_text()


def test_rewrite_refuses_dirty_git_files_unless_forced(tmp_path):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": CODE})
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    (tmp_path / "app/code.py").write_text(CODE + "\n# edited\n")
    refused = invoke("rewrite", str(tmp_path), "--write")
    assert refused.exit_code == 2 and "uncommitted" in refused.stderr
    assert invoke("rewrite", str(tmp_path), "--write", "--force").exit_code == 0


def test_bad_only_is_a_usage_error(tmp_path):
    write_tree(tmp_path, {"app/code.py": CODE})
    assert invoke("rewrite", str(tmp_path), "--only", "nonsense").exit_code == 2


def test_the_docs_describe_every_json_field_and_kind():
    import dataclasses
    from pathlib import Path

    from codemods.detect import KINDS, Site

    doc = (Path(__file__).resolve().parents[2] / "docs" / "codemods.md").read_text()
    missing = [f.name for f in dataclasses.fields(Site) if f"| `{f.name}` |" not in doc]
    missing += [kind for kind in KINDS if f"| `{kind}` |" not in doc]
    assert missing == []
