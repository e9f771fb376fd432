"""A test whose service is absent skips with the reason, except in CI, where it fails."""

from __future__ import annotations

import socket

import pytest

from outbox.testing import services


@pytest.fixture
def closed_port(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the socket is closed again: nothing listens on that port now
    monkeypatch.setitem(services.SERVICES, "ghost", ("STRANGLER_TEST_GHOST", f"ghost://127.0.0.1:{port}", port))
    return port


def test_absent_service_skips_outside_ci(closed_port, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"ghost is not reachable on 127.0.0.1:{closed_port}"):
        services.service_url("ghost")


def test_absent_service_fails_in_ci(closed_port, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="ghost is not reachable"):
        services.service_url("ghost")


def test_present_service_gives_its_url(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        monkeypatch.setitem(services.SERVICES, "here", ("STRANGLER_TEST_HERE", f"here://127.0.0.1:{port}", port))
        assert services.service_url("here") == f"here://127.0.0.1:{port}"
        monkeypatch.setenv("STRANGLER_TEST_HERE", f"here://localhost:{port}/db")
        assert services.service_url("here") == f"here://localhost:{port}/db"


def test_missing_client_library_names_the_extra(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"pip install 'strangler\[nope\]'"):
        services.require_module("no_such_module_strangler", "nope")
