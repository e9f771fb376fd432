"""What the walkthrough prints and counts: whole commands, pasteable lines, a fixed number of checks;
and that the README's one install command brings everything the walkthrough runs."""

from __future__ import annotations

import configparser
import io
import re
from pathlib import Path

import pytest

from toolkit import walkthrough as module
from toolkit.walkthrough import Walkthrough, WalkthroughError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def walkthrough(tmp_path):
    out = io.StringIO()
    w = Walkthrough(tmp_path / "work", "file://./events", out)
    w.workdir.mkdir()
    w.logs.mkdir()
    yield w, out
    w.stop_all()


def test_a_failing_command_is_named_whole_in_the_check_it_fails(walkthrough):
    w, out = walkthrough
    w.run(["python", "-c", "print(42); raise SystemExit(3)"])
    w.check("the thing the command was for", True)

    assert len(w.checks) == 1, "a failed exit code is not a check of its own"
    check = w.checks[0]
    assert not check.ok
    assert check.detail == "`python -c 'print(42); raise SystemExit(3)'` exited 3: 42"
    assert check.detail in out.getvalue()


def test_the_number_of_checks_is_the_same_whether_commands_pass_or_fail(walkthrough):
    w, _ = walkthrough
    for code in (0, 1):
        w.run(["python", "-c", f"raise SystemExit({code})"])
        w.check(f"command exiting {code}", True)
    assert [c.ok for c in w.checks] == [True, False]


def test_a_background_command_is_printed_as_a_shell_takes_it(walkthrough):
    w, out = walkthrough
    w.start("sleeper", ["python", "-c", "import time; time.sleep(30)"])
    line = next(line for line in out.getvalue().splitlines() if "$ " in line)
    assert line.endswith(" > logs/sleeper.log 2>&1 &"), line
    assert "'&'" not in line


def test_a_walkthrough_that_stops_early_counts_every_check(tmp_path, monkeypatch):
    out = io.StringIO()
    w = Walkthrough(tmp_path / "work", "file://./events", out)

    def stop():
        w.check("the one check made", True)
        raise WalkthroughError("no broker")

    monkeypatch.setattr(w, "copy_and_exercise", stop)
    assert w.run_all() == 1
    text = out.getvalue()
    assert f"1 of {module.EXPECTED_CHECKS} checks held" in text
    assert "✗" in text and "no broker" in text


def extras() -> dict[str, set[str]]:
    """setup.cfg's extras, each with the requirement names it installs (``strangler[...]`` expanded)."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    raw = {name: [r.strip() for r in value.splitlines() if r.strip()]
           for name, value in parser["options.extras_require"].items()}

    def names(extra: str) -> set[str]:
        found = set()
        for requirement in raw[extra]:
            own = re.fullmatch(r"strangler\[(.*)\]", requirement)
            if own:
                for inner in own.group(1).split(","):
                    found |= names(inner.strip())
            else:
                found.add(re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower())
        return found

    return {name: names(name) for name in raw}


def test_the_readme_install_brings_what_the_walkthrough_runs():
    # `pip install -e '.[all]' && strangler walkthrough`: the walkthrough runs the shop's tests with
    # pytest, the shop needs Flask, and emit encrypts (crypto).
    needed = {"pytest", "flask", "flask-sqlalchemy", "joserfc", "cryptography", "pynacl"}
    assert needed <= extras()["all"]
    assert "python3 -m pip install -e '.[all]' && strangler walkthrough" in (ROOT / "README.md").read_text()


def test_every_requirement_of_an_extra_has_a_floor():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    for name, value in parser["options.extras_require"].items():
        for requirement in filter(None, map(str.strip, value.splitlines())):
            assert requirement.startswith("strangler[") or ">=" in requirement, (name, requirement)



def test_the_docs_give_the_number_of_checks():
    assert f"the same {module.EXPECTED_CHECKS} checks" in (ROOT / "docs" / "walkthrough.md").read_text()
    assert f"all {module.EXPECTED_CHECKS} checks held" in (ROOT / "README.md").read_text()
