"""The README's main command: the walkthrough runs end to end, on embedded defaults and on brokers."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import pytest

from outbox.testing.services import service_url
from toolkit.walkthrough import EXPECTED_CHECKS


def walkthrough(tmp_path, router):
    return subprocess.run(
        [sys.executable, "-m", "toolkit", "walkthrough", "--workdir", str(tmp_path / "work"), "--router", router],
        capture_output=True, text=True, timeout=600,
    )


def assert_every_check_held(proc):
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    held = re.search(r"(\d+) of (\d+) checks held", proc.stdout)
    assert held and held.group(1) == held.group(2) == str(EXPECTED_CHECKS), proc.stdout[-2000:]
    assert "✗" not in proc.stdout


def test_walkthrough_on_embedded_defaults(tmp_path):
    proc = walkthrough(tmp_path, "file://./events")
    assert_every_check_held(proc)
    for step in ("strangler scan", "strangler rewrite", "strangler outbox migrate", "strangler keys new",
                 "strangler relay", "the service sent the same 5 e-mails"):
        assert step in proc.stdout
    # Background commands are printed as a shell takes them: pasteable, the & not quoted.
    assert "$ strangler relay --db sqlite:///shop.db --router file://./events > logs/relay.log 2>&1 &\n" in proc.stdout
    work = tmp_path / "work"
    assert (work / "logs" / "relay.log").exists()
    assert (work / "mail" / "notifications.jsonl").read_text() != ""
    assert b"customer0@example.com" not in (work / "events" / "order.jsonl").read_bytes()


#: Destinations the shop's events go to (one per aggregate type), and the service's group.
DESTINATIONS = ("customer", "product", "stock_level", "order", "payment", "loyalty_entry", "daily_sales")


def remove_from_broker(service: str, url: str, prefix: str) -> None:
    """Delete what a walkthrough left on a shared broker: its streams, exchanges and queue."""
    if service == "rabbitmq":
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        channel.queue_delete(prefix + "notifications")  # destination_prefix names the group's queue too
        for name in DESTINATIONS:
            channel.exchange_delete(prefix + name)
        connection.close()
    else:
        import asyncio

        import nats

        async def delete_streams():
            client = await nats.connect(url)
            js = client.jetstream()
            for stream in await js.streams_info():
                if stream.config.name.startswith(prefix):
                    await js.delete_stream(stream.config.name)
            await client.close()

        asyncio.run(delete_streams())


@pytest.mark.parametrize("service, scheme", [("rabbitmq", "amqp"), ("nats", "nats")])
def test_walkthrough_on_a_broker(tmp_path, service, scheme):
    url = service_url(service)
    prefix = f"wt{uuid.uuid4().hex[:8]}_"
    separator = "&" if "?" in url else "?"
    try:
        proc = walkthrough(tmp_path, f"{url}{separator}destination_prefix={prefix}")
    finally:
        remove_from_broker(service, url, prefix)
    assert_every_check_held(proc)


def test_a_check_that_does_not_hold_fails_the_walkthrough(tmp_path):
    proc = walkthrough(tmp_path, "nosuchbroker://127.0.0.1:1")
    assert proc.returncode == 1
    assert "✗" in proc.stdout and "Failed:" in proc.stdout
    # The same number of checks as a run where every one holds.
    assert re.search(rf"\d+ of {EXPECTED_CHECKS} checks held", proc.stdout), proc.stdout[-2000:]


def test_a_work_folder_that_is_not_empty_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "shop.db").write_text("")  # a previous run's
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit", "walkthrough", "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "is not empty" in proc.stderr
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["shop.db"]
