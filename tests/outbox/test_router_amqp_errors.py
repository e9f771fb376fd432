"""RabbitMQ errors say why (pika hides the reason in its exception's arguments), and pika's own log stays quiet."""

from __future__ import annotations

import logging

import pytest

from outbox.routers import RouterError, open_router, open_subscription
from outbox.testing.conformance import make_event
from outbox.testing.services import require_module, service_url

REFUSED = "amqp://guest:s3cretpw@127.0.0.1:1/%2F"


@pytest.fixture
def pika():
    return require_module("pika", "rabbitmq")


@pytest.fixture
def records():
    """Every log record at INFO and above that reaches the root logger, as ``logging.basicConfig(level=INFO)``
    would print; pika's logger level as the application left it (unset), restored after."""
    pika_logger = logging.getLogger("pika")
    saved = pika_logger.level
    pika_logger.setLevel(logging.NOTSET)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)

    root = logging.getLogger()
    handler, level = Keep(logging.INFO), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield seen
    root.removeHandler(handler)
    root.setLevel(level)
    pika_logger.setLevel(saved)


def test_a_subscription_that_cannot_connect_says_connection_refused_with_the_password_hidden(pika):
    with pytest.raises(RouterError) as refused:
        open_subscription(REFUSED, group="g", destinations=["order"])
    message = str(refused.value)
    assert message.startswith("amqp://guest:***@127.0.0.1:1/%2F: cannot connect: AMQPConnectionError: ")
    assert "connection refused" in message.lower() and "s3cretpw" not in message


def test_a_publish_that_cannot_connect_says_connection_refused(pika):
    router = open_router(REFUSED)
    try:
        [result] = router.publish([make_event()])
    finally:
        router.close()
    assert not result.ok and not result.permanent
    assert "connection refused" in result.error.lower() and "s3cretpw" not in result.error


def test_a_wrong_password_says_access_refused(pika):
    url = service_url("rabbitmq")
    wrong = url.replace("guest:guest@", "guest:n0t-the-password@")
    with pytest.raises(RouterError, match="ACCESS_REFUSED") as refused:
        open_subscription(wrong, group="g", destinations=["order"])
    assert "n0t-the-password" not in str(refused.value)


def test_describe_error_digs_out_every_attempts_cause(pika):
    from pika.adapters.utils.connection_workflow import (
        AMQPConnectionWorkflowFailed,
        AMQPConnectorSocketConnectError,
    )

    from outbox.routers.amqp import describe_error

    refused = AMQPConnectorSocketConnectError(ConnectionRefusedError(111, "Connection refused"))
    timeout = AMQPConnectorSocketConnectError(TimeoutError("timed out"))
    wrapped = pika.exceptions.AMQPConnectionError(AMQPConnectionWorkflowFailed([refused, timeout, refused]))
    assert describe_error(wrapped) == ("AMQPConnectionError: ConnectionRefusedError: [Errno 111] Connection refused; "
                                       "TimeoutError: timed out")
    assert describe_error(pika.exceptions.AMQPConnectionError()) == "AMQPConnectionError: no reason given"
    lost = pika.exceptions.StreamLostError("Stream connection lost: ConnectionResetError(104, 'reset')")
    assert describe_error(lost) == "StreamLostError: Stream connection lost: ConnectionResetError(104, 'reset')"
    leaky = pika.exceptions.AMQPConnectionError("could not log in as guest:s3cretpw")
    assert "s3cretpw" not in describe_error(leaky, REFUSED)


def test_pika_logs_nothing_of_a_failed_connection_the_router_reports_itself(pika, records):
    with pytest.raises(RouterError):
        open_subscription(REFUSED, group="g", destinations=["order"])
    router = open_router(REFUSED)
    try:
        assert not router.publish([make_event()])[0].ok
    finally:
        router.close()
    assert [f"{r.name}: {r.getMessage()}" for r in records if r.name.startswith("pika")] == []


def test_a_level_the_application_set_on_pika_is_kept(pika, records):
    logging.getLogger("pika").setLevel(logging.ERROR)
    with pytest.raises(RouterError):
        open_subscription(REFUSED, group="g", destinations=["order"])
    assert logging.getLogger("pika").level == logging.ERROR
    assert any(r.name.startswith("pika") and r.levelno == logging.ERROR for r in records)
