"""TLS variants: the Redis router over rediss:// to a TLS listener this test starts, with client certificates."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from outbox.routers import Destinations, RouterError, open_router, open_subscription
from outbox.testing.conformance import make_event, receive_all
from outbox.testing.services import require_module
from tests.outbox.relay_helpers import free_port, wait_until
from tests.outbox.tls_certs import make_certificates


@pytest.fixture
def tls_redis(tmp_path):
    """A redis-server of its own with only a TLS port that requires client certificates."""
    require_module("redis", "redis")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH")
    certs = make_certificates(tmp_path / "certs")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--tls-cert-file", str(certs["server"]), "--tls-key-file", str(certs["server_key"]),
         "--tls-ca-cert-file", str(certs["ca"]), "--tls-auth-clients", "yes", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    import redis

    def up() -> bool:
        if process.poll() is not None:
            pytest.skip(f"redis-server cannot listen with TLS here: {process.stdout.read()[-500:]}")
        try:
            client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(certs["ca"]),
                                 ssl_certfile=str(certs["client"]), ssl_keyfile=str(certs["client_key"]))
            return client.ping()
        except redis.ConnectionError:
            return False

    wait_until(up, what="the TLS redis-server to start")
    yield f"rediss://127.0.0.1:{port}/0", certs
    process.kill()
    process.wait()


def test_rediss_publishes_and_reads_back_with_ca_and_client_certificate(tls_redis):
    url, certs = tls_redis
    tls = {"ca_file": str(certs["ca"]), "cert_file": str(certs["client"]), "key_file": str(certs["client_key"])}
    subscription = open_subscription(url, group="billing", destinations=["order"], **tls)
    router = open_router(url, destinations=Destinations(), **tls)
    try:
        events = [make_event(key=str(n)) for n in range(5)]
        assert all(r.ok for r in router.publish(events))
        assert [d.envelope.id for d in receive_all(subscription, 5)] == [e.id for e in events]
    finally:
        router.close()
        subscription.close()


def test_tls_options_in_the_url_query_work_too(tls_redis):
    url, certs = tls_redis
    query = f"?ca_file={certs['ca']}&cert_file={certs['client']}&key_file={certs['client_key']}"
    router = open_router(url + query)
    try:
        assert router.publish([make_event()])[0].ok
    finally:
        router.close()


def test_without_the_client_certificate_the_publish_fails_transiently(tls_redis):
    url, certs = tls_redis
    router = open_router(url, ca_file=str(certs["ca"]))
    try:
        [result] = router.publish([make_event()])
        assert not result.ok and not result.permanent
    finally:
        router.close()


def test_tls_options_on_a_plain_url_are_refused_naming_the_url():
    with pytest.raises(RouterError, match=r"redis://127.0.0.1:6379/0.*rediss://"):
        open_router("redis://127.0.0.1:6379/0", ca_file="/etc/ssl/ca.pem")
