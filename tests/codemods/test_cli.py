"""``strangler scan`` and ``strangler rewrite`` through click's CliRunner."""

from __future__ import annotations

import json
import subprocess

import pytest

from click.testing import CliRunner

from toolkit.cli import cli

from .helpers import MODELS, SIGN_UP, invoke, write_tree

CODE = SIGN_UP


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


def test_scan_json_with_another_format_is_a_usage_error_and_with_format_json_agrees(tmp_path):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": CODE})
    for order in (["--json", "--format", "sarif"], ["--format", "text", "--json"]):
        result = CliRunner().invoke(cli, ["scan", str(tmp_path), *order])
        assert result.exit_code == 2 and "contradicts --format" in result.output
    agreed = CliRunner().invoke(cli, ["scan", str(tmp_path), "--json", "--format", "json"])
    assert agreed.exit_code == 1 and json.loads(agreed.stdout)["sites"]


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


def test_rewrite_of_an_add_of_a_loop_variable_is_idempotent_and_scan_counts_it_covered(tmp_path):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": '''
        from .models import db


        def import_customers(customers):
            for c in customers:
                db.session.add(c)
    '''})
    assert invoke("rewrite", str(tmp_path), "--write").exit_code == 0
    once = (tmp_path / "app/code.py").read_text()
    assert once.count("emit(db.session") == 1
    assert invoke("rewrite", str(tmp_path), "--write").exit_code == 0
    assert (tmp_path / "app/code.py").read_text() == once
    scan = invoke("scan", str(tmp_path), "--format", "json")
    assert scan.exit_code == 0, scan.stdout
    site = next(s for s in json.loads(scan.stdout)["sites"] if s["kind"] == "session-add")
    assert (site["covered"], site["action"]) == (True, "covered")


@pytest.mark.parametrize("command", [("rewrite", "--write"), ("scan",)])
@pytest.mark.parametrize("setting, mentions", [
    ('event_types = ["app/*::*={prefix}.{aggreagte}.{verb}"]',
     ["codemods.event_types", "{prefix}.{aggreagte}.{verb}", "unknown placeholder {aggreagte}",
      "{prefix}, {aggregate}, {verb}"]),
    ('event_types = ["app/*::*={prefix}.{aggregate.{verb}"]', ["codemods.event_types", "{aggregate.{verb}"]),
    ('skip_kinds = ["session_add"]', ["codemods.skip_kinds", "'session_add'", "unknown kind session_add",
                                      "session-add"]),
    ('skip = ["app/*:session_add"]', ["codemods.skip", "unknown kind session_add", "session-add"]),
])
def test_a_misspelt_codemods_setting_is_a_usage_error_before_any_file_is_touched(tmp_path, command, setting,
                                                                                  mentions):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": CODE, "app/more.py": CODE})
    config = tmp_path / "strangler.toml"
    config.write_text(f"[codemods]\n{setting}\n")
    before = {p: p.read_text() for p in tmp_path.rglob("*.py")}
    result = invoke(command[0], str(tmp_path / "app"), *command[1:], "--config", str(config))
    assert result.exit_code == 2
    for text in mentions:
        assert text in result.stderr
    assert {p: p.read_text() for p in tmp_path.rglob("*.py")} == before


def test_a_scan_that_finds_work_exits_1_saying_what_to_run_next_not_error(tmp_path):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": CODE})

    result = invoke("scan", str(tmp_path))

    assert result.exit_code == 1
    assert "Error" not in result.stderr
    assert f"2 state changes without an emit: 'strangler rewrite {tmp_path}' shows the emits" in result.stderr
