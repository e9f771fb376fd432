"""docs/walkthrough.md cannot drift: every command of its sh blocks runs, in order, and succeeds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "walkthrough.md"


def doc_commands() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    return "\n".join(blocks)


def test_the_doc_has_the_journey_in_order():
    script = doc_commands()
    order = ["cp -r", "strangler scan", "strangler rewrite", "strangler outbox migrate", "strangler keys new",
             "strangler relay", "--no-inline-email", "diff <(sort mail/inline.jsonl)"]
    positions = [script.index(step) for step in order]
    assert positions == sorted(positions)


def test_every_command_in_the_walkthrough_doc_runs(tmp_path):
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("STRANGLER_CRYPTO_POLICY", None)
    script = "set -euo pipefail\n" + doc_commands()
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]
    assert "same e-mails" in proc.stdout
    assert "the shop sent none itself" in proc.stdout
    assert "events, all encrypted" in proc.stdout
