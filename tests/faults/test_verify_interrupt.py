"""A SIGTERM (or Ctrl-C) stops ``strangler verify`` only after its clean-up: nothing it made is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from outbox.faults.interrupt import Interrupted, shielded, signals_interrupt

ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text`` (the stage's processes name its database)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def test_sigterm_mid_scenario_cleans_up_then_exits_1_saying_it_was_interrupted(tmp_path):
    db = tmp_path / "shop.db"
    events = tmp_path / "events"  # missing: the file router makes it, so the clean-up must remove it
    tmp = tmp_path / "tmp"  # where verify makes its working folders
    tmp.mkdir()
    verify = subprocess.Popen(
        [sys.executable, "-c", "from toolkit.cli import cli; cli(prog_name='strangler')", "verify",
         "--db", f"sqlite:///{db}", "--router", f"file://{events}", "--scenario", "relay-kill",
         "--scenario", "consumer-kill", "--events", "30", "--kills", "1", "--seconds", "5"],
        cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        # The relay has published: the scenario is in full swing, its tables, files and processes exist.
        wait_until(lambda: any(events.glob("*_item.jsonl")) or verify.poll() is not None, timeout=120,
                   what="the scenario's relay to publish")
        assert verify.poll() is None, verify.communicate()
        verify.send_signal(signal.SIGTERM)
        stdout, stderr = verify.communicate(timeout=120)
    finally:
        if verify.poll() is None:
            verify.kill()
    assert verify.returncode == 1, stderr
    assert b"interrupted by SIGTERM after 0 of 2 scenario(s); the clean-up ran" in stderr
    assert sa.inspect(sa.create_engine(f"sqlite:///{db}")).get_table_names() == []
    assert not events.exists()
    assert list(tmp.iterdir()) == []
    assert processes_mentioning(str(db)) == []


def test_a_signal_raises_interrupted_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    steps = []
    with pytest.raises(Interrupted) as raised, signals_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        steps.append("went on")
    assert raised.value.name == "SIGTERM" and steps == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_during_a_clean_up_is_held_until_the_clean_up_is_over():
    steps = []
    with pytest.raises(Interrupted), signals_interrupt():
        with shielded():
            os.kill(os.getpid(), signal.SIGTERM)
            steps.append("clean-up finished")
        steps.append("after the clean-up")
    assert steps == ["clean-up finished"]


def test_once_interrupted_a_second_signal_does_not_cut_the_clean_up_short():
    steps = []
    with pytest.raises(Interrupted), signals_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("clean-up finished")
    assert steps == ["clean-up finished"]
