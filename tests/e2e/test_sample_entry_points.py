"""The sample's commands a reader runs from the docs: a database not ready is one line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from outbox.testing.services import require_module

ROOT = Path(__file__).resolve().parents[2]


def run(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("STRANGLER_CRYPTO_POLICY", None)
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def assert_one_line(proc):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "<html" not in proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_simulating_orders_before_migrating_names_the_migration(tmp_path):
    require_module("flask_sqlalchemy", "sample")
    proc = run(["sample_monolith.shop.simulate", "--orders", "5", "--db", "sqlite:///shop.db",
                "--mail-spool", "mail/inline.jsonl"], tmp_path)
    assert_one_line(proc)
    assert "no table customers in sqlite:///shop.db" in proc.stderr
    assert f"alembic -c {ROOT / 'sample_monolith' / 'alembic.ini'} -x db=sqlite:///shop.db upgrade heads" \
        in proc.stderr
    assert not (tmp_path / "mail").exists()


def test_the_notifications_service_on_a_database_it_cannot_open(tmp_path):
    proc = run(["sample_monolith.services.notifications", "--db", f"sqlite:///{tmp_path}/missing/n.db",
                "--router", "file://./events", "--spool", "mail/n.jsonl", "--until-idle"], tmp_path)
    assert_one_line(proc)
    assert proc.stderr.startswith(f"notifications: cannot open the database sqlite:///{tmp_path}/missing/n.db")
