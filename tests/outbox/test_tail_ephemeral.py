"""``strangler events tail`` leaves nothing of its throw-away group on the broker, on every router.

Tail runs in-process (``CliRunner``) with ``--follow --count 2`` while a thread
publishes, so it works for brokers where a new group sees only new events
(RabbitMQ, MQTT). Its group name is made known by fixing the uuid it is made of.
"""

from __future__ import annotations

import json
import sys
import threading
import types
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from outbox.routers import Destinations, open_router
from outbox.testing.conformance import make_event
from outbox.testing.services import require_module, service_url
from toolkit.cli import cli
from toolkit.commands import events as events_command

HEX = "0123abcd"
GROUP = f"strangler-tail-{HEX}"


@pytest.fixture(autouse=True)
def known_group(monkeypatch):
    fixed = uuid.UUID(HEX + "0" * 24)
    monkeypatch.setattr(events_command, "uuid", types.SimpleNamespace(uuid4=lambda: fixed))


def tail_while_publishing(url: str, prefix: str, *extra: str):
    """Run tail for two events of ``order`` while a thread publishes one every 0.2 s; return the result."""
    router = open_router(url, destinations=Destinations(prefix=prefix))
    assert router.publish([make_event()])[0].ok  # declares what a relay would (exchange, stream)
    done = threading.Event()

    def publish():
        while not done.wait(0.2):
            router.publish([make_event()])

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        return CliRunner().invoke(
            cli, ["events", "tail", "--router", f"{url}{'&' if '?' in url else '?'}destination_prefix={prefix}",
                  "--destination", "order", "--follow", "--count", "2", "--json", *extra],
            catch_exceptions=False,
        )
    finally:
        done.set()
        thread.join(10)
        router.close()


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}_"


def test_tail_on_rabbitmq_leaves_no_queue():
    pika = require_module("pika", "rabbitmq")
    url = service_url("rabbitmq")
    prefix = _prefix()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        result = tail_while_publishing(url, prefix)
        assert result.exit_code == 0, result.output
        assert len(result.stdout.splitlines()) == 2
        channel = connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
            channel.queue_declare(prefix + GROUP, passive=True)  # the group's queue, prefixed
        assert gone.value.reply_code == 404
    finally:
        channel = connection.channel()
        channel.queue_delete(prefix + GROUP)
        channel.exchange_delete(prefix + "order")
        connection.close()


def test_tail_on_nats_leaves_no_consumer():
    require_module("nats", "nats")
    import asyncio

    import nats

    url = service_url("nats")
    prefix = _prefix()

    async def consumers():
        nc = await nats.connect(url)
        try:
            return [info.name for info in await nc.jetstream().consumers_info(prefix + "order")]
        finally:
            await nc.close()

    async def drop():
        nc = await nats.connect(url)
        try:
            await nc.jetstream().delete_stream(prefix + "order")
        finally:
            await nc.close()

    try:
        result = tail_while_publishing(url, prefix)
        assert result.exit_code == 0, result.output
        assert asyncio.run(consumers()) == []
    finally:
        asyncio.run(drop())


def test_tail_on_redis_leaves_no_group():
    redis = require_module("redis", "redis")
    url = service_url("redis")
    prefix = _prefix()
    client = redis.Redis.from_url(url)
    try:
        result = tail_while_publishing(url, prefix)
        assert result.exit_code == 0, result.output
        assert client.xinfo_groups(prefix + "order") == []
    finally:
        client.delete(prefix + "order")
        client.close()


def test_tail_on_mqtt_leaves_no_session():
    require_module("paho.mqtt.client", "mqtt")
    from tests.outbox.test_router_ephemeral import _session_present

    url = service_url("mqtt")
    prefix = _prefix()
    result = tail_while_publishing(url, prefix)
    assert result.exit_code == 0, result.output
    assert _session_present(url, prefix + GROUP) is False


def test_tail_on_files_writes_no_group_folder(tmp_path):
    url = f"file://{tmp_path}/events"
    result = tail_while_publishing(url, "")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "events" / ".groups").exists()


def test_tail_on_a_router_without_ephemeral_groups_still_works_and_says_what_stays(tmp_path):
    """A third-party router (entry point) that predates ephemeral groups: tail opens a named group and says so."""
    from tests.outbox.test_router_plugin import PLUGIN
    from tests.outbox.plugin_helpers import write_distribution

    site = write_distribution(tmp_path, "strangler_memo", PLUGIN, "[strangler.routers]\nmemo = strangler_memo:MemoRouter\n")
    sys.path.insert(0, str(site))
    try:
        router = open_router(f"memo://{tmp_path}/memo")
        events = [make_event(key=str(n)) for n in range(2)]
        assert all(r.ok for r in router.publish(events))
        result = CliRunner().invoke(cli, ["events", "tail", "--router", f"memo://{tmp_path}/memo",
                                          "--destination", "order", "--json"], catch_exceptions=False)
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("strangler_memo", None)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [e.id for e in events]
    assert f"no ephemeral groups: the consumer group '{GROUP}' stays on the broker" in result.stderr
    assert not Path(tmp_path, "memo", f".{GROUP}.offsets").exists()  # never acknowledges


def test_tail_on_a_rabbitmq_exchange_that_does_not_exist_says_so_and_creates_nothing():
    pika = require_module("pika", "rabbitmq")
    url = service_url("rabbitmq")
    prefix = _prefix()
    result = CliRunner().invoke(cli, ["events", "tail", "--router", f"{url}?destination_prefix={prefix}",
                                      "--destination", "ordre"], catch_exceptions=False)
    assert result.exit_code == 2
    assert f"no exchange '{prefix}ordre'" in result.output and "guest:***@" in result.output
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            connection.channel().exchange_declare(prefix + "ordre", passive=True)
    finally:
        channel = connection.channel()  # should it have failed: what tail used to leave
        channel.queue_delete(prefix + GROUP)
        channel.exchange_delete(prefix + "ordre")
        connection.close()


def test_tail_says_why_rabbitmq_cannot_be_reached_with_the_password_hidden():
    require_module("pika", "rabbitmq")
    result = CliRunner().invoke(cli, ["events", "tail", "--router", "amqp://guest:s3cretpw@127.0.0.1:1/%2F",
                                      "--destination", "order"], catch_exceptions=False)
    assert result.exit_code == 2
    assert "cannot connect: AMQPConnectionError: ConnectionRefusedError" in result.output
    assert "connection refused" in result.output.lower() and "s3cretpw" not in result.output


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_tail_stopped_by_ctrl_c_or_sigterm_removes_its_nats_consumer_at_once(signum, tmp_path):
    """Not only after the server's inactivity limit: tail closes its subscription on the way out."""
    require_module("nats", "nats")
    import asyncio
    import os
    import signal
    import subprocess
    import time

    import nats

    url = service_url("nats")
    prefix = _prefix()
    router = open_router(url, destinations=Destinations(prefix=prefix))
    assert router.publish([make_event()])[0].ok
    router.close()

    async def on_stream(work):
        nc = await nats.connect(url)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    async def names(js):
        return [info.name for info in await js.consumers_info(prefix + "order")]

    async def drop(js):
        await js.delete_stream(prefix + "order")

    proc = subprocess.Popen(
        [sys.executable, "-c", "from toolkit.cli import main; main()", "events", "tail", "--router",
         f"{url}?destination_prefix={prefix}", "--destination", "order", "--follow"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        deadline = time.monotonic() + 20
        while not asyncio.run(on_stream(names)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert asyncio.run(on_stream(names)), "tail never opened its consumer"
        proc.send_signal(getattr(signal, signum))
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert asyncio.run(on_stream(names)) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        asyncio.run(on_stream(drop))


def test_tail_follows_past_the_brokers_unacked_limit(tmp_path):
    """Its group being its own, tail acks what it showed: RabbitMQ stops delivering at ``prefetch`` unacked."""
    pika = require_module("pika", "rabbitmq")
    import os
    import subprocess

    url = service_url("rabbitmq")
    prefix = _prefix()
    router = open_router(url, destinations=Destinations(prefix=prefix))
    assert router.publish([make_event()])[0].ok  # declares the exchange
    done = threading.Event()

    def publish():
        while not done.wait(0.1):
            router.publish([make_event()])

    root = str(Path(__file__).resolve().parents[2])
    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        result = subprocess.run(
            [sys.executable, "-c", "from toolkit.cli import main; main()", "events", "tail", "--router",
             f"{url}?prefetch=2&destination_prefix={prefix}", "--destination", "order", "--follow",
             "--count", "5", "--json"],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": root}, capture_output=True, text=True, timeout=30,
        )
    finally:
        done.set()
        thread.join(10)
        router.close()
        connection = pika.BlockingConnection(pika.URLParameters(url))
        connection.channel().exchange_delete(prefix + "order")
        connection.close()
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 5
