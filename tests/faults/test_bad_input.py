"""Bad input to every entry point: a clear error, and nothing lost.

Relay (CLI), consumer, emit and the key files each meet a malformed config, a
wrong database URL, an unreachable broker, a key file with the wrong mode or
format, or a corrupt outbox row; each says what is wrong, and every event is
still there to be delivered once the cause is fixed.
"""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import outbox
from outbox.consumer import Consumer
from outbox.crypto import KeyRing, new_key
from outbox.crypto.keys import KeyFileError
from outbox.emit import EmitError
from outbox.migrate import standalone_config, upgrade
from outbox.routers import Delivery, RouterError
from outbox.table import get_outbox_table
from outbox.testing.conformance import make_event
from toolkit.cli import cli


def seeded(url: str, count: int = 3) -> list[str]:
    """An outbox with ``count`` pending events; return their ids."""
    upgrade(standalone_config(url))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        ids = [outbox.emit(conn, "shop.order.created", aggregate="order", key=str(n), data={"n": n})
               for n in range(count)]
    engine.dispose()
    return ids


def rows(url: str) -> dict[str, dict]:
    t = get_outbox_table()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = {r.id: dict(r._mapping) for r in conn.execute(sa.select(t))}
    engine.dispose()
    return found


def run(args: list[str], env: dict | None = None):
    return CliRunner().invoke(cli, args, env=env)


# -- the relay ------------------------------------------------------------------------------------


def test_a_malformed_config_file_stops_the_relay_with_its_name_and_touches_no_row(sqlite_url, tmp_path):
    ids = seeded(sqlite_url)
    broken = tmp_path / "strangler.toml"
    broken.write_text("[relay\nbatch = 10\n")
    result = run(["--config", str(broken), "relay", "--db", sqlite_url, "--router", f"file://{tmp_path}/ev", "--once"])
    assert result.exit_code == 2
    assert "strangler.toml" in result.output
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[relay]\nbatchsize = 10\n")
    result = run(["--config", str(unknown), "relay", "--db", sqlite_url, "--router", f"file://{tmp_path}/ev", "--once"])
    assert result.exit_code == 2
    assert "unknown key 'relay.batchsize'" in result.output
    assert all(row["published_at"] is None and row["attempts"] == 0 for row in rows(sqlite_url).values())
    assert set(rows(sqlite_url)) == set(ids)


def test_a_malformed_database_url_is_a_usage_error(tmp_path):
    result = run(["relay", "--db", "not a url", "--router", f"file://{tmp_path}/ev", "--once"])
    assert result.exit_code == 2
    assert "is not a usable SQLAlchemy URL" in result.output


def test_an_unreachable_database_stops_the_relay_with_the_reason(tmp_path):
    result = run(["relay", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none", "--router",
                  f"file://{tmp_path}/ev", "--once"])
    assert result.exit_code == 1
    assert "relay stopped" in result.output and "127.0.0.1" in result.output


def test_an_unreachable_broker_at_start_keeps_every_row_pending_then_they_flow(sqlite_url, tmp_path):
    ids = seeded(sqlite_url)
    result = run(["relay", "--db", sqlite_url, "--router", "redis://127.0.0.1:1/0", "--once"])
    assert result.exit_code == 1
    assert "publishes failed" in result.output
    # A transient failure costs no attempt and never makes a row dead.
    assert all(r["published_at"] is None and r["attempts"] == 0 and r["dead_at"] is None
               for r in rows(sqlite_url).values())
    result = run(["relay", "--db", sqlite_url, "--router", f"file://{tmp_path}/ev", "--once"])
    assert result.exit_code == 0, result.output
    assert all(r["published_at"] is not None for r in rows(sqlite_url).values())
    assert set(rows(sqlite_url)) == set(ids)


def test_an_unknown_router_scheme_is_a_usage_error(sqlite_url):
    seeded(sqlite_url)
    result = run(["relay", "--db", sqlite_url, "--router", "kafka2://127.0.0.1:9092", "--once"])
    assert result.exit_code == 2
    assert "no router for scheme 'kafka2'" in result.output


def test_a_corrupt_row_goes_dead_with_the_reason_the_rest_flow_and_retry_delivers_it(sqlite_url, tmp_path):
    ids = seeded(sqlite_url)
    t = get_outbox_table()
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.id == ids[1]).values(source=""))
    router = f"file://{tmp_path}/ev"
    result = run(["relay", "--db", sqlite_url, "--router", router, "--once", "--max-attempts", "1"])
    assert result.exit_code == 1
    state = rows(sqlite_url)
    assert state[ids[0]]["published_at"] is not None and state[ids[2]]["published_at"] is not None
    assert state[ids[1]]["dead_at"] is not None
    assert "cannot be read as a CloudEvent" in state[ids[1]]["last_error"]
    status = run(["outbox", "status", "--db", sqlite_url])
    assert status.exit_code == 1 and "order/1" in status.output and "cannot be read" in status.output
    with engine.begin() as conn:  # the fix
        conn.execute(sa.update(t).where(t.c.id == ids[1]).values(source="/shop"))
    engine.dispose()
    assert run(["outbox", "retry", "--db", sqlite_url]).exit_code == 0
    assert run(["relay", "--db", sqlite_url, "--router", router, "--once"]).exit_code == 0
    assert all(r["published_at"] is not None and r["dead_at"] is None for r in rows(sqlite_url).values())


def test_relay_encryption_with_unreadable_keys_is_a_usage_error(sqlite_url, tmp_path):
    seeded(sqlite_url)
    keys = tmp_path / "keys"
    new_key(keys, "shop", producer=True)
    new_key(keys, "billing")
    policy = tmp_path / "policy.toml"
    policy.write_text('[readers]\n"shop.order.*" = ["billing"]\n')
    for private in keys.glob("*.private.jwk"):
        os.chmod(private, 0o644)
    env = {"STRANGLER_CRYPTO_ENCRYPT_AT": "relay", "STRANGLER_CRYPTO_KEYS_DIR": str(keys),
           "STRANGLER_CRYPTO_POLICY": str(policy)}
    result = run(["relay", "--db", sqlite_url, "--router", f"file://{tmp_path}/ev", "--once"], env=env)
    assert result.exit_code == 2
    assert "readable by group or others" in result.output
    assert all(r["published_at"] is None for r in rows(sqlite_url).values())


# -- emit ---------------------------------------------------------------------------------------


def test_emit_with_a_private_key_readable_by_others_fails_and_the_transaction_commits_nothing(
        sqlite_url, tmp_path, monkeypatch):
    upgrade(standalone_config(sqlite_url))
    keys = tmp_path / "keys"
    new_key(keys, "shop", producer=True)
    new_key(keys, "billing")
    policy = tmp_path / "policy.toml"
    policy.write_text('[readers]\n"shop.order.*" = ["billing"]\n')
    (private,) = keys.glob("shop-*.private.jwk")
    os.chmod(private, 0o640)
    monkeypatch.setenv("STRANGLER_CRYPTO_KEYS_DIR", str(keys))
    monkeypatch.setenv("STRANGLER_CRYPTO_POLICY", str(policy))
    outbox.settings.reset()
    engine = sa.create_engine(sqlite_url)
    with pytest.raises(KeyFileError, match="mode 0640"):
        with engine.begin() as conn:
            outbox.emit(conn, "shop.order.created", aggregate="order", data={"n": 1})
    assert rows(sqlite_url) == {}
    engine.dispose()


def test_emit_rejects_bad_arguments_at_the_call_and_the_other_events_commit(sqlite_url):
    upgrade(standalone_config(sqlite_url))
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        good = outbox.emit(conn, "shop.order.created", aggregate="order", data={"n": 1})
        with pytest.raises(EmitError, match="event type"):
            outbox.emit(conn, "shop order created", aggregate="order")
        with pytest.raises(EmitError, match="data"):
            outbox.emit(conn, "shop.order.created", aggregate="order", data={"when": object()})
    assert set(rows(sqlite_url)) == {good}
    engine.dispose()


# -- keys and the consumer ----------------------------------------------------------------------


def test_a_key_file_that_is_not_a_jwk_is_named_in_the_error(tmp_path):
    keys = tmp_path / "keys"
    new_key(keys, "billing")
    public = keys / "billing-1.jwk"
    public.write_text("not json")
    with pytest.raises(KeyFileError, match=r"billing-1\.jwk: not a JSON Web Key"):
        KeyRing.load(keys)


def test_a_consumer_with_a_private_key_readable_by_others_does_not_start(sqlite_url, tmp_path):
    keys = tmp_path / "keys"
    new_key(keys, "billing")
    policy = tmp_path / "policy.toml"
    policy.write_text('[readers]\n"shop.order.*" = ["billing"]\n[trust]\nbilling = ["shop"]\n')
    (private,) = keys.glob("billing-*.private.jwk")
    os.chmod(private, 0o604)
    with pytest.raises(KeyFileError, match="readable by group or others"):
        Consumer("billing", sa.create_engine(sqlite_url), keys_dir=str(keys), policy=str(policy))


def test_a_consumer_whose_database_is_unreachable_gives_the_event_back(tmp_path):
    consumer = Consumer("billing", sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    consumer.add_handler("shop.order.created", lambda event, session: None)
    outcomes = []
    delivery = Delivery(make_event(), "order", _ack=lambda: outcomes.append("ack"),
                        _nack=lambda: outcomes.append("nack"))
    assert consumer.handle(delivery) == "retry"
    assert outcomes == ["nack"]  # redelivered later: not lost


def test_a_consumer_with_an_unreachable_broker_says_which(sqlite_url, monkeypatch):
    """A long-running consumer waits the outage out (test_consumer_start); one run until idle gives up, naming it."""
    import outbox.consumer

    monkeypatch.setattr(outbox.consumer, "IDLE_START_PATIENCE", 0.5)
    consumer = Consumer("billing", sa.create_engine(sqlite_url))
    with pytest.raises(RouterError, match="127.0.0.1:1"):
        consumer.run("redis://127.0.0.1:1/0", destinations=["order"], install_signals=False, until_idle=True)
