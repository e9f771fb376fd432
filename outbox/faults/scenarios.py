"""The fault scenarios: each writes, relays, injects its fault, drains, consumes and checks.

``run_scenario(name, db_url, router_url, budget=..., workdir=...)`` returns the
``Figures``; ``Budget`` bounds events, kills and durations (``Budget.ci()`` for
the test suite, ``Budget.full()`` for the long run).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from sqlalchemy import insert, text, update

from ..ids import new_event_id
from ..table import partition_for
from .check import Figures, check
from .stage import AGGREGATE, BROKER_BINARIES, EVENT_TYPE, Process, Stage, StageError, private_broker


class Unsupported(StageError):
    """The scenario cannot run on this database or broker (e.g. no private instance to stop)."""


@dataclasses.dataclass
class Budget:
    """How big and how long the scenarios are."""

    events: int = 600
    writers: int = 3
    aggregates: int = 24
    kills: int = 8
    consumer_kills: int = 6
    outage: float = 6.0
    db_cuts: int = 4
    holds: int = 3
    hold_seconds: float = 2.0
    backlog: int = 5000
    backlog_pad: int = 4096
    seconds: float = 300.0  # stop injecting faults after this long

    @classmethod
    def ci(cls) -> "Budget":
        """Small enough for the test suite on two cores."""
        return cls()

    @classmethod
    def full(cls) -> "Budget":
        """The long run: 25 kills, a 30 s outage, a 100k backlog."""
        return cls(events=3000, writers=4, aggregates=64, kills=25, consumer_kills=25, outage=30.0, db_cuts=20,
                   holds=6, hold_seconds=5.0, backlog=100_000, backlog_pad=1024, seconds=1800.0)


def _scheme(url: str) -> str:
    scheme = urlsplit(url).scheme
    return {"rediss": "redis", "amqps": "amqp", "tls": "nats", "nats+tls": "nats", "mqtts": "mqtt"}.get(scheme, scheme)


def _writers(stage: Stage, budget: Budget, *, pace: float, stop_file: Path, max_events: int | None = None,
             pad: int = 0, per_txn: int = 3, holds: int = 0, hold: float = 0.0) -> list[Process]:
    per = max(1, budget.aggregates // budget.writers)
    total = max_events if max_events is not None else budget.events
    share = max(1, total // budget.writers)
    return [
        stage.start_writer(i, range(i * per, (i + 1) * per), max_events=share, pace=pace, stop_file=stop_file,
                           pad=pad, per_txn=per_txn, holds=holds if i == 0 else 0, hold=hold)
        for i in range(budget.writers)
    ]


def _finish_writers(stage: Stage, writers: list[Process], stop_file: Path | None, *, timeout: float = 120.0) -> None:
    """Tell the writers to stop (with ``stop_file``; None lets them write all their events) and wait."""
    if stop_file is not None:
        stop_file.touch()
    for writer in writers:
        try:
            code = writer.wait(timeout)
        except subprocess.TimeoutExpired:
            raise StageError(f"{writer.role} did not finish: {writer.tail()}") from None
        if code != 0:
            raise StageError(f"{writer.role} exited {code}: {writer.tail()}")


def _stop_relays(relays: list[Process]) -> None:
    for relay in relays:
        if relay.alive():
            try:  # SIGTERM before its handler is installed would just kill it
                relay.wait_for_log('"relay started"')
            except StageError:
                pass  # no start line (a quieter log format): stop it anyway
            code = relay.stop()
            if code != 0:
                raise StageError(f"relay exited {code} on SIGTERM: {relay.tail()}")


def _consume_all(stage: Stage, *, expected: int, timeout: float = 180.0, handler_ms: float = 0.0,
                 patience: float = 40.0, idle_seconds: float = 2.0) -> None:
    """Run the consumer until it handled ``expected`` events, or nothing new came for ``patience`` seconds.

    A consumer that ends early (the broker stayed quiet for ``idle_seconds``)
    is started again while events are still coming.
    """
    deadline = time.monotonic() + timeout
    handled, progress = _handled(stage), time.monotonic()
    while True:
        consumer = stage.start_consumer(handler_ms=handler_ms, idle_seconds=idle_seconds, batch=50)
        try:
            code = consumer.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            consumer.kill()
            return
        if code != 0:
            raise StageError(f"consumer exited {code}: {consumer.tail()}")
        now_handled = _handled(stage)
        if now_handled > handled:
            handled, progress = now_handled, time.monotonic()
        if handled >= expected or time.monotonic() > deadline or time.monotonic() - progress > patience:
            return


def _handled(stage: Stage) -> int:
    from sqlalchemy import func, select

    with stage.engine.connect() as conn:
        return conn.execute(select(func.count(func.distinct(stage.effects.c.event_id)))).scalar_one()


def _wait_published_beyond(stage: Stage, before: int, relay: Process, timeout: float = 60.0) -> None:
    stage.wait_for(lambda: stage.counts()["published"] > before or not relay.alive(), timeout=timeout,
                   what="the relay to publish", poll=0.02)
    if not relay.alive():
        raise StageError(f"relay exited on its own: {relay.tail()}")


def _settle(stage: Stage, relays: list[Process], writers: list[Process], stop_file: Path, figures: Figures) -> None:
    """Stop the writers, let the relays drain, stop them, consume everything, check."""
    _finish_writers(stage, writers, stop_file)
    stage.wait_drained()
    _stop_relays(relays)
    produced = sum(stage.produced().values())
    _consume_all(stage, expected=produced)
    check(stage, figures)


# -- the scenarios ----------------------------------------------------------------------------------


def relay_kill(stage: Stage, budget: Budget, figures: Figures, rng: random.Random) -> None:
    """One relay, SIGKILLed at random moments while it publishes, and restarted each time.

    On PostgreSQL marks are slowed down by 20 ms (a trigger on the private
    table), so that the window between publish and mark is as likely a place to
    die as the one between claim and publish. (On MariaDB the marks trail the
    publishes by themselves.)
    """
    stage.slow_marks(0.02)
    stop = stage.workdir / "stop"
    writers = _writers(stage, budget, pace=0.2, stop_file=stop, max_events=budget.events * 5)
    started = time.monotonic()
    while figures.faults < budget.kills and time.monotonic() - started < budget.seconds:
        before = stage.counts()["published"]
        relay = stage.start_relay(batch=10)
        _wait_published_beyond(stage, before, relay)
        time.sleep(rng.uniform(0.0, 0.25))  # somewhere between claim, publish and mark
        relay.kill()
        figures.faults += 1
    relay = stage.start_relay(batch=10)
    figures.notes["kills"] = figures.faults
    _settle(stage, [relay], writers, stop, figures)


def multi_relay(stage: Stage, budget: Budget, figures: Figures, rng: random.Random, relays: int = 3) -> None:
    """Several relays at once; one of them SIGKILLed and restarted again and again."""
    stop = stage.workdir / "stop"
    writers = _writers(stage, budget, pace=0.1, stop_file=stop, max_events=budget.events * 5)
    running = [stage.start_relay(batch=10) for _ in range(relays)]
    _wait_published_beyond(stage, 0, running[0])
    started = time.monotonic()
    while figures.faults < budget.kills and time.monotonic() - started < budget.seconds:
        time.sleep(rng.uniform(0.5, 1.5))
        victim = running.pop(0)
        victim.kill()
        figures.faults += 1
        running.append(stage.start_relay(batch=10))
    figures.notes["relays"] = relays
    figures.notes["kills"] = figures.faults
    _settle(stage, running, writers, stop, figures)


def long_transactions(stage: Stage, budget: Budget, figures: Figures, rng: random.Random) -> None:
    """A writer holds transactions open with early positions while later ones commit and publish."""
    stop = stage.workdir / "stop"
    writers = _writers(stage, budget, pace=0.02, stop_file=stop, holds=budget.holds, hold=budget.hold_seconds)
    relay = stage.start_relay(batch=20)
    for writer in writers:
        writer.wait(max(120.0, budget.holds * budget.hold_seconds * 4))
    stage.wait_drained()
    # Evidence that the fault happened: rows published after rows with later positions.
    t = stage.outbox
    from sqlalchemy import select

    with stage.engine.connect() as conn:
        rows = conn.execute(select(t.c.position, t.c.published_at).order_by(t.c.position.desc())).all()
    earliest_later = None
    late = 0
    for position, published_at in rows:
        if earliest_later is not None and published_at > earliest_later:
            late += 1
        earliest_later = published_at if earliest_later is None else min(earliest_later, published_at)
    figures.faults = budget.holds
    figures.notes["published_after_later_positions"] = late
    _settle(stage, [relay], writers, stop, figures)


def consumer_kill(stage: Stage, budget: Budget, figures: Figures, rng: random.Random) -> None:
    """The consumer SIGKILLed mid-handler (and after commit, before ack) and restarted."""
    stop = stage.workdir / "stop"
    writers = _writers(stage, budget, pace=0.05, stop_file=stop, max_events=budget.events * 5)
    relay = stage.start_relay(batch=50)
    self_kills = 0
    started = time.monotonic()
    while figures.faults < budget.consumer_kills and time.monotonic() - started < budget.seconds:
        before = _handled(stage)
        consumer = stage.start_consumer(handler_ms=3.0, die_before_ack=0.05, batch=10, idle_seconds=30.0)
        stage.wait_for(lambda: _handled(stage) > before or not consumer.alive(), timeout=60,
                       what="the consumer to handle events", poll=0.02)
        time.sleep(rng.uniform(0.0, 0.3))  # mid-handler, or between commit and ack
        if consumer.alive():
            consumer.kill()
            figures.faults += 1
        else:
            self_kills += consumer.wait() == -9
    figures.notes["kills"] = figures.faults
    figures.notes["died_before_ack"] = self_kills
    _settle(stage, [relay], writers, stop, figures)


def broker_outage(stage: Stage, budget: Budget, figures: Figures, rng: random.Random) -> None:
    """The broker (a private instance) stopped and started again while writers keep writing."""
    broker = stage.broker
    stop = stage.workdir / "stop"
    writers = _writers(stage, budget, pace=0.05, stop_file=stop, max_events=budget.events * 20)
    relay = stage.start_relay(batch=20)
    _wait_published_beyond(stage, 0, relay)
    broker.stop()
    figures.faults = 1
    at_stop = stage.counts()
    time.sleep(budget.outage)
    during = stage.counts()
    if not relay.alive():
        raise StageError(f"relay exited during the outage: {relay.tail()}")
    broker.start()
    figures.notes["outage_s"] = budget.outage
    figures.notes["written_during_outage"] = during["total"] - at_stop["total"]
    _settle(stage, [relay], writers, stop, figures)


def db_cut(stage: Stage, budget: Budget, figures: Figures, rng: random.Random) -> None:
    """Every connection of the relay and the writers terminated, again and again, mid-batch."""
    dialect = stage.engine.dialect.name
    if dialect != "postgresql":
        raise Unsupported(f"cutting only the scenario's own connections needs PostgreSQL, not {dialect}")
    stop = stage.workdir / "stop"
    writers = _writers(stage, budget, pace=0.05, stop_file=stop, max_events=budget.events * 5)
    relay = stage.start_relay(batch=10)
    _wait_published_beyond(stage, 0, relay)
    cut = 0
    for _ in range(budget.db_cuts):
        time.sleep(rng.uniform(0.3, 1.0))
        cut += _terminate_connections(stage)
        figures.faults += 1
    time.sleep(0.5)
    if not relay.alive():
        raise StageError(f"relay exited after the connections were cut: {relay.tail()}")
    figures.notes["connections_cut"] = cut
    _settle(stage, [relay], writers, stop, figures)


def _terminate_connections(stage: Stage) -> int:
    """Terminate every connection of the stage's processes (found by their application_name)."""
    with stage.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE application_name = :name AND pid <> pg_backend_pid()"),
            {"name": stage.name},
        ).all()
    return sum(1 for (ok,) in rows if ok)


def poison_rows(stage: Stage, budget: Budget, figures: Figures, rng: random.Random) -> None:
    """Poison rows mixed in go dead with a reason while the rest flow; ``outbox retry`` after a fix delivers them."""
    scheme = _scheme(stage.router_url)
    small = 8192
    stop = stage.workdir / "stop"
    writers = _writers(stage, budget, pace=0.02, stop_file=stop)
    poison = {"p-corrupt": _poison_row(stage, "p-corrupt", source=""),
              "p-oversized": _poison_row(stage, "p-oversized", pad=small * 2)}
    if _refuse(stage, scheme, True):
        poison["p-rejected"] = _poison_row(stage, "p-rejected", aggregate="blocked")
    undecryptable = _poison_row(stage, "p-undecryptable", content_type="application/jose+json",
                                payload=b'{"protected":"garbage","ciphertext":"garbage"}')
    relay = stage.start_relay(batch=20, max_attempts=3, router_url=stage.routed_url(max_bytes=small))
    _finish_writers(stage, writers, None, timeout=300)
    stage.wait_drained()
    dead = _dead_rows(stage)
    figures.faults = len(poison) + 1
    figures.notes["dead_before_fix"] = len(dead)
    figures.notes["dead_reasons"] = "|".join(sorted({_reason(error) for error in dead.values()}))
    if set(dead) != set(poison.values()):
        raise StageError(f"expected exactly the poison rows dead, found {len(dead)}: {dead}")
    # The fix: repair the corrupt row, make room for the large one, clear the broker's refusal.
    with stage.engine.begin() as conn:
        conn.execute(update(stage.outbox).where(stage.outbox.c.id == poison["p-corrupt"])
                     .values(source="/strangler-verify"))
    _refuse(stage, scheme, False)
    _stop_relays([relay])
    relay = stage.start_relay(batch=20, max_attempts=3)
    retry = subprocess.run(
        [sys.executable, "-m", "toolkit", "outbox", "retry", "--db", stage.db_url, "--json"],
        env=stage.env(), cwd=stage.workdir, capture_output=True, text=True, timeout=120,
    )
    if retry.returncode != 0:
        raise StageError(f"strangler outbox retry exited {retry.returncode}: {retry.stderr}")
    figures.notes["retried"] = json.loads(retry.stdout)["retried"]
    counts = stage.wait_drained()
    figures.notes["dead_after_retry"] = counts["dead"]
    _stop_relays([relay])
    expected = sum(stage.produced().values()) + len(poison) + 1
    _consume_all(stage, expected=expected - 1)
    check(stage, figures, extra_expected={agg: 1 for agg in poison})
    from sqlalchemy import select

    from .. import inbox

    dl = inbox.dead_letter_table
    with stage.engine.connect() as conn:
        reasons = conn.execute(select(dl.c.reason).where(dl.c.consumer == stage.consumer_name,
                                                         dl.c.event_id == undecryptable)).scalars().all()
    figures.notes["undecryptable_dead_letter"] = ",".join(reasons) or "missing"


def _refuse(stage: Stage, scheme: str, refuse: bool) -> bool:
    """Make the broker refuse, for good, what is published to the ``blocked`` destination (or stop it).

    Redis: a plain key where the stream would be (XADD fails with WRONGTYPE).
    NATS: the stream's ``max_msg_size`` set below any event (the publish ack is
    a 400 error). RabbitMQ: a ``direct`` exchange where the router declares a
    topic one (the broker closes the channel with 406 PRECONDITION_FAILED, which
    the router pins on the message); the fix puts the topic exchange and the
    subscriptions' bindings back.
    """
    url = stage.router_url.split("?", 1)[0]
    if scheme == "redis":
        import redis

        client = redis.Redis.from_url(url)
        try:
            if refuse:
                client.set(stage.prefix + "blocked", "not a stream")
            else:
                client.delete(stage.prefix + "blocked")
        finally:
            client.close()
        return True
    if scheme == "nats":
        import asyncio

        import nats

        async def limit():
            nc = await nats.connect(url.replace("nats+tls://", "tls://"), connect_timeout=3)
            try:
                js = nc.jetstream()
                info = await js.stream_info(stage.prefix + "blocked")  # made by the subscriptions
                await js.update_stream(info.config.evolve(max_msg_size=16 if refuse else -1))
            finally:
                await nc.close()

        asyncio.run(limit())
        return True
    if scheme == "amqp":
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            channel = connection.channel()
            channel.exchange_delete(stage.prefix + "blocked")
            if refuse:
                channel.exchange_declare(stage.prefix + "blocked", exchange_type="direct", durable=True)
        finally:
            connection.close()
        if not refuse:
            stage.prepare_broker()  # the topic exchange and the queues' bindings again
        return True
    return False


def _poison_row(stage: Stage, agg: str, *, source: str = "/strangler-verify", pad: int = 0,
                aggregate: str = AGGREGATE, content_type: str = "application/json",
                payload: bytes | None = None) -> str:
    event_id = new_event_id()
    if payload is None:
        data = {"agg": agg, "seq": 0}
        if pad:
            data["pad"] = "x" * pad
        payload = json.dumps(data).encode()
    with stage.engine.begin() as conn:
        conn.execute(insert(stage.outbox).values(
            id=event_id, aggregatetype=aggregate, aggregateid=agg, type=EVENT_TYPE, payload=payload,
            timestamp=dt.datetime.now(dt.timezone.utc), source=source, content_type=content_type,
            lease_partition=partition_for(aggregate, agg), attempts=0,
        ))
    return event_id


def _dead_rows(stage: Stage) -> dict[str, str]:
    from sqlalchemy import select

    t = stage.outbox
    with stage.engine.connect() as conn:
        return dict(conn.execute(select(t.c.id, t.c.last_error).where(t.c.dead_at.is_not(None))).all())


def _reason(error: str | None) -> str:
    """unreadable (the relay cannot build the event), oversized (the router's own max_bytes), rejected (the broker)."""
    error = error or ""
    if "cannot be read" in error:
        return "unreadable"
    if "max_bytes" in error or "bytes, over the" in error:
        return "oversized"
    if any(word in error for word in ("WRONGTYPE", "refused", "rejected", "APIError", "BadRequest", "code=")):
        return "rejected"
    return error[:40].replace(" ", "_")


def backlog(stage: Stage, budget: Budget, figures: Figures, rng: random.Random) -> None:
    """A backlog drained by one relay while a slow consumer reads: the relay's memory stays flat."""
    stop = stage.workdir / "stop"
    writers = _writers(stage, budget, pace=0.0, stop_file=stop, max_events=budget.backlog,
                       pad=budget.backlog_pad, per_txn=100)
    _finish_writers(stage, writers, None, timeout=1800)
    total = stage.counts()["total"]
    slow = stage.start_consumer(handler_ms=2.0, batch=20, idle_seconds=600.0)
    relay = stage.start_relay(batch=200)
    samples: list[tuple[int, int]] = []
    while True:
        rss = relay.rss_kib()
        counts = stage.counts()
        if rss is None:
            raise StageError(f"relay exited while draining: {relay.tail()}")
        samples.append((counts["published"], rss))
        if counts["pending"] == 0:
            break
        time.sleep(0.1)
    _stop_relays([relay])
    slow.kill()
    quarter = next((rss for published, rss in samples if published >= total // 4), samples[-1][1])
    peak = max(rss for published, rss in samples if published >= total // 4)
    figures.faults = 1
    figures.notes.update({
        "backlog": total, "rss_start_kib": samples[0][1], "rss_quarter_kib": quarter, "rss_peak_kib": peak,
        "rss_growth_kib": peak - quarter, "samples": len(samples),
        "payload_mib": round(total * budget.backlog_pad / 2**20, 1),
    })
    _consume_all(stage, expected=total, timeout=max(180.0, total / 100))
    check(stage, figures)


SCENARIOS: dict[str, Callable] = {
    "relay-kill": relay_kill,
    "multi-relay": multi_relay,
    "long-transactions": long_transactions,
    "consumer-kill": consumer_kill,
    "broker-outage": broker_outage,
    "db-cut": db_cut,
    "poison-rows": poison_rows,
    "backlog": backlog,
}


def run_scenario(name: str, db_url: str, router_url: str, *, budget: Budget | None = None,
                 workdir: Path | None = None, seed: int | None = None, **options) -> Figures:
    """Run scenario ``name`` on a private stage of ``db_url`` and ``router_url``; return its figures.

    ``broker-outage`` starts its own broker instance of the router's kind (Redis,
    RabbitMQ, NATS or Mosquitto) on a spare port, since it stops it; every other scenario uses
    ``router_url`` under a private destination prefix.
    """
    if name not in SCENARIOS:
        raise KeyError(f"no scenario {name!r}; known: {', '.join(SCENARIOS)}")
    budget = budget or Budget.ci()
    rng = random.Random(seed)
    scheme = _scheme(router_url)
    figures = Figures(name, database=_db_name(db_url), broker=scheme)
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=f"strangler-{name}-"))
    started = time.monotonic()
    if name == "broker-outage":
        if scheme not in BROKER_BINARIES:
            raise Unsupported(f"broker-outage starts its own broker: Redis, RabbitMQ, NATS or MQTT, not {scheme}")
        with private_broker(scheme, workdir) as broker:
            stage = Stage(db_url, broker.url, workdir)
            stage.broker = broker
            _run(stage, name, budget, figures, rng, options)
    else:
        stage = Stage(db_url, router_url, workdir)
        _run(stage, name, budget, figures, rng, options)
    figures.seconds = time.monotonic() - started
    return figures


def _run(stage: Stage, name: str, budget: Budget, figures: Figures, rng: random.Random, options: dict) -> None:
    """Create the stage, run the scenario on it, and drop the stage whatever happens (a failed create too)."""
    figures.stage = stage.name
    try:
        stage.create()
        SCENARIOS[name](stage, budget, figures, rng, **options)
    finally:
        stage.drop()


def _db_name(url: str) -> str:
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    return {"postgres": "postgresql", "mysql": "mariadb"}.get(scheme, scheme)
