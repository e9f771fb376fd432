"""Fixtures of the outbox tests that more than one module uses."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from outbox.testing.services import in_ci, require_module
from tests.outbox.relay_helpers import free_port, wait_until


@pytest.fixture
def inbox_engine(sqlite_url):
    """An engine on a fresh SQLite service database with the inbox tables, disposed afterwards."""
    from sqlalchemy import create_engine

    from outbox import inbox

    inbox.upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own on a spare port, appendfsync always; (url, start, kill).

    For outages: the shared Redis must never be stopped, and this one keeps
    what it acknowledged across a kill and a start.
    """
    require_module("redis", "redis")
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not on PATH (the outage tests start one of their own)"
        pytest.fail(reason) if in_ci() else pytest.skip(reason)
    import redis

    port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    state = {}

    def start():
        state["p"] = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--appendonly", "yes",
             "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=port)
        wait_until(lambda: _pings(client), what="redis-server to start")
        client.close()

    def kill():
        state["p"].kill()
        state["p"].wait()

    start()
    yield f"redis://127.0.0.1:{port}/0", start, kill
    if state["p"].poll() is None:
        kill()


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False
