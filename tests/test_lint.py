"""The code has no unused imports, undefined names or syntax errors (ruff's pyflakes rules).

A name misspelt in a rarely taken branch (an error path, a fallback) passes
every test that never takes it; the linter reads every branch.
The rules and exclusions are in ``pyproject.toml`` (``[tool.ruff]``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from outbox.testing.services import require_module

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    require_module("ruff", "test")
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", str(ROOT)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert done.returncode == 0, f"ruff check found problems; fix them or run `ruff check --fix`:\n{done.stdout}{done.stderr}"
