"""Router options in the URL: every router takes the ones it documents and refuses any other.

The refusal happens when the router is opened, before any connection, so
these tests need no broker: the URLs point at port 1, where nothing listens.
A refused option used to reach the broker client (redis-py retried a
``TypeError`` forever), be dropped without a word (NATS, MQTT), or become part
of a folder's name (``file://./events?max_bytes=100``).
"""

from __future__ import annotations

import pytest

from outbox.routers import RouterError, masked_url, open_router, open_subscription
from outbox.testing.conformance import make_event
from outbox.testing.services import require_module, service_url

TLS = ("ca_file", "cert_file", "key_file")

#: scheme: (a URL of it with nothing listening, the client module, the options its docs list)
ROUTERS = {
    "file": ("file://{tmp}/events", None, ("max_bytes", "destination_prefix")),
    "redis": ("redis://127.0.0.1:1/0", "redis", ("maxlen", "max_bytes", "consumer", "claim_idle", *TLS, "destination_prefix")),
    "rediss": ("rediss://127.0.0.1:1/0", "redis", ("maxlen", "max_bytes", "consumer", "claim_idle", *TLS, "destination_prefix")),
    "amqp": ("amqp://guest:guest@127.0.0.1:1/%2F", "pika",
             ("max_bytes", "confirm_timeout", "prefetch", *TLS, "destination_prefix")),
    "amqps": ("amqps://guest:guest@127.0.0.1:1/%2F", "pika",
              ("max_bytes", "confirm_timeout", "prefetch", *TLS, "destination_prefix")),
    "nats": ("nats://127.0.0.1:1", "nats",
             ("ack_timeout", "max_bytes", "duplicate_window", "rewind", *TLS, "destination_prefix")),
    "tls": ("tls://127.0.0.1:1", "nats",
            ("ack_timeout", "max_bytes", "duplicate_window", "rewind", *TLS, "destination_prefix")),
    "nats+tls": ("nats+tls://127.0.0.1:1", "nats",
                 ("ack_timeout", "max_bytes", "duplicate_window", "rewind", *TLS, "destination_prefix")),
    "mqtt": ("mqtt://127.0.0.1:1", "paho.mqtt.client", ("ack_timeout", "max_bytes", "client_id", *TLS, "destination_prefix")),
    "mqtts": ("mqtts://127.0.0.1:1", "paho.mqtt.client",
              ("ack_timeout", "max_bytes", "client_id", *TLS, "destination_prefix")),
}


def publishing(url, **options):
    return open_router(url, **options)


def consuming(url, **options):
    return open_subscription(url, group="g", destinations=["order"], **options)


@pytest.fixture(params=sorted(ROUTERS))
def router(request, tmp_path):
    """(URL, options the router documents) of one router scheme."""
    url, module, known = ROUTERS[request.param]
    if module:
        require_module(module, module)
    return url.format(tmp=tmp_path), known


def refusal(open_side, url, **options) -> str:
    with pytest.raises(RouterError) as refused:
        open_side(url, **options)
    return str(refused.value)


def known_in(message: str) -> set[str]:
    return set(message.rsplit("; known: ", 1)[1].split(", "))


@pytest.mark.parametrize("open_side", [publishing, consuming])
def test_an_unknown_url_option_is_refused_naming_it_the_url_and_the_known_ones(router, open_side):
    url, known = router
    message = refusal(open_side, url + "?max_len=10")
    assert "unknown option(s) max_len" in message
    assert masked_url(url) + "?max_len=10" in message
    assert known_in(message) == set(known)


@pytest.mark.parametrize("open_side", [publishing, consuming])
def test_an_unknown_keyword_option_is_refused_the_same_way(router, open_side):
    url, known = router
    message = refusal(open_side, url, max_len=10)
    assert "unknown option(s) max_len" in message and known_in(message) == set(known)


def test_the_refusal_hides_the_urls_password():
    message = refusal(publishing, "redis://:s3cretpw@127.0.0.1:1/0?max_len=10")
    assert "s3cretpw" not in message
    assert "redis://:***@127.0.0.1:1/0?max_len=10" in message


@pytest.mark.parametrize(
    "url, module, attribute, value",
    [
        ("file://{tmp}/events?max_bytes=100", None, "max_bytes", 100),
        ("redis://127.0.0.1:1/0?maxlen=10&max_bytes=2048", "redis", "maxlen", 10),
        ("amqp://guest:guest@127.0.0.1:1/%2F?confirm_timeout=5", "pika", "confirm_timeout", 5.0),
        ("nats://127.0.0.1:1?ack_timeout=5&duplicate_window=60", "nats", "ack_timeout", 5.0),
        ("mqtt://127.0.0.1:1?ack_timeout=5&client_id=relay-7", "paho.mqtt.client", "ack_timeout", 5.0),
    ],
)
def test_a_documented_url_option_is_taken_by_the_router_not_passed_to_its_client(
    url, module, attribute, value, tmp_path
):
    if module:
        require_module(module, module)
    router = open_router(url.format(tmp=tmp_path))
    try:
        assert getattr(router, attribute) == value
    finally:
        router.close()


def test_a_file_url_query_is_options_and_never_part_of_the_folder_name(tmp_path):
    router = open_router(f"file://{tmp_path}/events?max_bytes=300")
    small, large = make_event(key="1"), make_event(key="2", data={"text": "x" * 400})
    ok, too_large = router.publish([small, large])
    assert ok.ok and too_large.permanent and "over the file router's 300" in too_large.error
    assert [p.name for p in tmp_path.iterdir()] == ["events"]


def test_a_refused_file_url_creates_no_folder(tmp_path):
    refusal(publishing, f"file://{tmp_path}/events?bogus=1")
    assert list(tmp_path.iterdir()) == []


def test_redis_publishes_with_documented_options_in_the_url():
    redis = require_module("redis", "redis")
    url = service_url("redis")
    router = open_router(url + "?maxlen=1000&max_bytes=65536&destination_prefix=optstest_")
    try:
        assert router.publish([make_event()])[0].ok
    finally:
        router.close()
        client = redis.Redis.from_url(url)
        client.delete("optstest_order")
        client.close()


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:s3cretpw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("amqp://guest:s3cretpw@127.0.0.1:5672/%2F", "amqp://guest:***@127.0.0.1:5672/%2F"),
        ("mqtts://relay:s3cret%40pw@broker:8883?ca_file=/ca.pem", "mqtts://relay:***@broker:8883?ca_file=/ca.pem"),
        ("redis://127.0.0.1:6379/0?password=s3cretpw", "redis://127.0.0.1:6379/0?password=***"),
        ("nats://relay@127.0.0.1:4222", "nats://relay@127.0.0.1:4222"),
        ("file://./events", "file://./events"),
    ],
)
def test_masked_url_hides_the_password_and_keeps_user_host_and_options(url, shown):
    assert masked_url(url) == shown
