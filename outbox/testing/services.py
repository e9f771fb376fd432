"""Reach the real services tests need; skip when absent, fail under ``CI=true``.

Outside CI a developer without, say, RabbitMQ still runs the rest of the
suite; in CI a missing service is a broken machine, never a silent skip.
"""

from __future__ import annotations

import importlib
import os
import socket
from urllib.parse import urlsplit

import pytest

#: Loopback addresses of the services, overridable per variable.
SERVICES = {
    "postgresql": ("STRANGLER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test", 5432),
    "mariadb": ("STRANGLER_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test", 3306),
    "redis": ("STRANGLER_TEST_REDIS", "redis://127.0.0.1:6379/0", 6379),
    "rabbitmq": ("STRANGLER_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/%2F", 5672),
    "mqtt": ("STRANGLER_TEST_MQTT", "mqtt://127.0.0.1:1883", 1883),
    "nats": ("STRANGLER_TEST_NATS", "nats://127.0.0.1:4222", 4222),
}


def in_ci() -> bool:
    """True when running in CI, where a missing service is a failure."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_url(name: str) -> str:
    """Return the URL of service ``name``, or skip/fail the test if it does not answer."""
    env, default, default_port = SERVICES[name]
    url = os.environ.get(env, default)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError as exc:
        reason = f"{name} is not reachable on {host}:{port} ({exc}); start it as .ci/run does"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return url


def require_module(module: str, extra: str):
    """Import and return ``module``, or skip (fail in CI) naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        reason = f"{module} is not installed: pip install 'strangler[{extra}]'"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
