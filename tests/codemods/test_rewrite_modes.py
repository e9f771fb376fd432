"""``strangler rewrite --diff`` and ``--write`` exclude each other, and ``--force`` goes only with ``--write``."""

from __future__ import annotations

import pytest



from .helpers import MODELS, SIGN_UP, invoke, write_tree

CODE = SIGN_UP


@pytest.mark.parametrize("flags", [("--write", "--diff"), ("--diff", "--write")])
def test_diff_and_write_together_are_a_usage_error_whatever_their_order(tmp_path, flags):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": CODE})
    before = (tmp_path / "app/code.py").read_text()
    result = invoke("rewrite", str(tmp_path), *flags, "--force")
    assert result.exit_code == 2
    assert "--diff and --write exclude each other" in result.output
    assert "writes nothing" in result.output and "in place" in result.output
    assert (tmp_path / "app/code.py").read_text() == before
    assert "emit(" not in result.stdout


@pytest.mark.parametrize("flags, writes", [((), False), (("--diff",), False), (("--write",), True)])
def test_one_mode_alone_still_works(tmp_path, flags, writes):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": CODE})
    before = (tmp_path / "app/code.py").read_text()
    result = invoke("rewrite", str(tmp_path), *flags, *(("--force",) if writes else ()), "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert ((tmp_path / "app/code.py").read_text() != before) is writes
    assert ('+    emit(db.session, "app.user.created", user)' in result.stdout) is not writes


def test_the_help_says_the_two_modes_exclude_each_other():
    text = " ".join(invoke("rewrite", "--help").output.split())
    assert "--diff (the default) and --write exclude each other: exit 2 with both." in text
    assert "Not with --write" in text and "Not with --diff" in text


@pytest.mark.parametrize("flags", [("--force",), ("--diff", "--force")])
def test_force_without_write_is_a_usage_error(tmp_path, flags):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": CODE})
    result = invoke("rewrite", str(tmp_path), *flags)
    assert result.exit_code == 2 and "pass it with --write" in result.output
