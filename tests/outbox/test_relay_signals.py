"""SIGTERM/SIGINT at any moment of ``strangler relay``, start-up included: exit 0, nothing lost or claimed.

The start-up tests install a tiny package (a ``.dist-info`` with entry points,
as pip would) whose database dialect and router wait, as a slow driver import
or a slow broker connection would, until the test lets them go: the signal
lands exactly in that step of a real relay process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import text

from outbox.relay import Relay, RelayOptions
from outbox.routers import open_router
from tests.outbox.plugin_helpers import write_distribution
from tests.outbox.relay_helpers import emit_events, file_events, migrated_engine, pending_count

SLOW_START = '''
"""A database dialect and a router that take their time to open, until the test's go file appears."""
import os
import time
from pathlib import Path

from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

from outbox.routers.file import FileRouter


def _wait(step):
    folder = Path(os.environ["SLOW_START_DIR"])
    (folder / f"{step}.opening").touch()
    deadline = time.monotonic() + 60
    while not (folder / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


class SlowDialect(SQLiteDialect_pysqlite):
    @classmethod
    def import_dbapi(cls):
        _wait("engine")
        return super().import_dbapi()


class SlowRouter(FileRouter):
    def __init__(self, url, **options):
        _wait("router")
        super().__init__("file://" + url[len("slowfile://"):], **options)
'''


@pytest.fixture(scope="module")
def slow_start_path(tmp_path_factory):
    """A folder holding ``strangler_slow_start`` and its dist-info: dialect ``slowsqlite``, router ``slowfile``."""
    return write_distribution(
        tmp_path_factory.mktemp("site"), "strangler_slow_start", SLOW_START,
        "[sqlalchemy.dialects]\nslowsqlite = strangler_slow_start:SlowDialect\n"
        "[strangler.routers]\nslowfile = strangler_slow_start:SlowRouter\n",
    )


def wait_for(path, process, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the relay exited {process.returncode} early: {process.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path.name}")
        time.sleep(0.01)


@pytest.mark.parametrize("step", ["engine", "router"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_during_start_up_exits_0_and_claims_nothing(slow_start_path, sqlite_url, tmp_path, step, sig):
    engine = migrated_engine(sqlite_url)
    emit_events(engine, ["a", "b"], per_key=5)
    control = tmp_path / "control"
    control.mkdir()
    db = sqlite_url.replace("sqlite://", "slowsqlite://", 1) if step == "engine" else sqlite_url
    router = f"slowfile://{tmp_path}/events" if step == "router" else f"file://{tmp_path}/events"
    env = {**os.environ, "SLOW_START_DIR": str(control),
           "PYTHONPATH": os.pathsep.join([str(slow_start_path), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-c", "from toolkit.cli import main; main()", "relay", "--db", db, "--router", router],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(control / f"{step}.opening", process)
        process.send_signal(sig)
        time.sleep(0.2)  # the handler runs while the step still waits
        (control / "go").touch()
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "stop requested during start-up" in stderr and "relay started" not in stderr
    assert pending_count(engine) == 10 and file_events(tmp_path / "events") == []
    with engine.connect() as conn:  # no heartbeat, no partition taken
        assert conn.execute(text("SELECT count(*) FROM strangler_outbox_relays")).scalar() == 0
        assert conn.execute(
            text("SELECT count(*) FROM strangler_outbox_leases WHERE owner IS NOT NULL")
        ).scalar() == 0
    engine.dispose()


def test_a_relay_stopped_before_run_returns_at_once_and_the_next_run_relays(sqlite_url, tmp_path):
    engine = migrated_engine(sqlite_url)
    emit_events(engine, ["a"], per_key=3)
    relay = Relay(engine, open_router(f"file://{tmp_path}/events"), options=RelayOptions(poll_interval=0.05))
    relay.stop()
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(stats=relay.run()))
    runner.start()
    runner.join(10)
    if runner.is_alive():  # the stop was lost: the relay would run until stopped again
        relay.stop()
        runner.join(30)
        pytest.fail("run() went on after a stop() that came before it")
    stats = outcome["stats"]
    assert (stats.batches, stats.published) == (0, 0) and pending_count(engine) == 3
    assert relay.drain().published == 3  # the stop was taken by the first run
    assert relay.drain().published == 0 and not relay.stopping
    engine.dispose()
