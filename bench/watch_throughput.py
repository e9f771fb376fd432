"""Does ``strangler watch`` keep up with the relay? Events/s of the watch on one core against the relay's publish rate.

Measured in one run, on the same encrypted events (Ed25519-signed, two P-256
recipients, content-key window 1000):

  relay          Relay.drain() of an outbox table to the file router (its normal threads, both cores)
  engine         Watch.observe on ready Observations, every per-event rule kind on (two rates, a burst,
                 a source rule, a key rule against a key folder): pinned to one core
  engine+parse   Observation.of(envelope) (reads the JWE's recipient kids) + observe: one core
  watch (file)   run_watch over the file router: read, parse, observe, ack: one core
  relay (redis), watch (redis)   the same two over Redis Streams, with --redis URL (a stream of its own)

Usage:
  python bench/watch_throughput.py [--events 20000] [--rounds 3] [--db URL] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

import outbox
from outbox import emit
from outbox.crypto import KeyRing, Sealer, new_key
from outbox.crypto.policy import parse_policy
from outbox.migrate import standalone_config, upgrade
from outbox.relay import Relay
from outbox.routers import Destinations, open_router
from outbox.watch import Observation, Watch, parse_rules
from outbox.watch.run import run_watch

POLICY = {
    "readers": {"shop.order.*": ["billing", "shipping"], "shop.customer.*": ["crm"]},
    "trust": {"billing": ["shop"]},
}

RULES = """
[[rule]]
name = "mass-deletion"
kind = "rate"
type = "shop.customer.deleted"
max = 100
window = "1m"

[[rule]]
name = "order-flood"
kind = "rate"
type = "shop.order.*"
max = 10000000
window = "1m"

[[rule]]
name = "hot-subject"
kind = "burst"
max = 50
window = "1m"

[[rule]]
name = "shop-only"
kind = "source"
type = "shop.*"
sources = ["/shop"]

[[rule]]
name = "keys"
kind = "key"
keys_dir = "keys"
"""


def world(folder: Path):
    keys = folder / "keys"
    new_key(keys, "shop", producer=True)
    for service in ("billing", "shipping", "crm"):
        new_key(keys, service)
    (folder / "rules.toml").write_text(RULES)
    return Sealer(KeyRing.load(keys), parse_policy(POLICY))


def fill(db_url: str, n: int) -> None:
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM strangler_outbox"))
    for start in range(0, n, 500):
        with engine.begin() as conn:
            for i in range(start, min(n, start + 500)):
                emit(
                    conn,
                    "shop.order.created",
                    aggregate="order",
                    key=i % 5000,
                    data={"id": i, "total": "19.90"},
                )
    engine.dispose()


def relay_rate(db_url: str, router_url: str, n: int, prefix: str = "") -> float:
    engine = create_engine(db_url)
    router = open_router(router_url, destinations=Destinations(prefix=prefix))
    started = time.perf_counter()
    stats = Relay(engine, router).drain()
    elapsed = time.perf_counter() - started
    router.close()
    engine.dispose()
    assert stats.published == n, stats
    return n / elapsed


def read_envelopes(router_url: str):
    from outbox.routers import open_subscription

    sub = open_subscription(router_url, group="bench-reader", destinations=["order"])
    out = []
    while True:
        batch = sub.receive(max_events=5000, timeout=0.05)
        if not batch:
            break
        out.extend(d.envelope for d in batch)
    sub.close()
    return out


def engine_rate(rules, envelopes, *, parse: bool) -> float:
    watch = Watch(rules)
    observations = None if parse else [Observation.of(e, "order") for e in envelopes]
    started = time.perf_counter()
    if parse:
        for envelope in envelopes:
            watch.observe(Observation.of(envelope, "order"))
    else:
        for observation in observations:
            watch.observe(observation)
    elapsed = time.perf_counter() - started
    assert watch.alerts_raised == 0, "the benchmark's traffic is ordinary: no alert expected"
    return len(envelopes) / elapsed


def watch_rate(rules, router_url: str, n: int, group: str, destination: str = "order") -> float:
    watch = Watch(rules)
    started = time.perf_counter()
    seen = run_watch(
        watch, router_url, [destination], group=group, once=True, poll=0.05, batch=1000
    )
    elapsed = time.perf_counter() - started
    assert seen == n, seen
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", default=None, help="database URL (default: a SQLite file)")
    parser.add_argument(
        "--redis", default=None, help="also measure relay and watch over this Redis"
    )
    args = parser.parse_args()

    results: dict[str, list[float]] = {
        "relay": [],
        "engine": [],
        "engine+parse": [],
        "watch (file)": [],
    }
    if args.redis:
        results.update({"relay (redis)": [], "watch (redis)": []})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sealer = world(folder)
        outbox.configure(source="/shop", sealer=sealer)
        db_url = args.db or f"sqlite:///{folder}/shop.db"
        upgrade(standalone_config(db_url))
        rules = parse_rules(__import__("tomllib").loads(RULES), "bench rules", folder)
        all_cpus = os.sched_getaffinity(0)
        for round_ in range(args.rounds):
            router_url = f"file://{folder}/events-{round_}"
            fill(db_url, args.events)
            os.sched_setaffinity(0, all_cpus)
            results["relay"].append(relay_rate(db_url, router_url, args.events))
            envelopes = read_envelopes(router_url)
            os.sched_setaffinity(0, {min(all_cpus)})  # the watch on one core
            results["engine"].append(engine_rate(rules, envelopes, parse=False))
            results["engine+parse"].append(engine_rate(rules, envelopes, parse=True))
            results["watch (file)"].append(
                watch_rate(rules, router_url, args.events, f"bench-watch-{round_}")
            )
            os.sched_setaffinity(0, all_cpus)
            if args.redis:
                import redis

                prefix = f"bench-{uuid.uuid4().hex[:8]}-"
                fill(db_url, args.events)
                try:
                    results["relay (redis)"].append(
                        relay_rate(db_url, args.redis, args.events, prefix)
                    )
                    os.sched_setaffinity(0, {min(all_cpus)})
                    results["watch (redis)"].append(
                        watch_rate(rules, args.redis, args.events, "bench-watch", prefix + "order")
                    )
                finally:
                    os.sched_setaffinity(0, all_cpus)
                    client = redis.Redis.from_url(args.redis)
                    client.delete(prefix + "order")
                    client.close()
    relay = statistics.median(results["relay"])
    print(
        f"{args.events} events x {args.rounds} rounds, {dt.datetime.now():%Y-%m-%d %H:%M}, db {db_url.split(':')[0]}"
    )
    print(f"{'variant':<14} {'events/s':>10} {'x relay':>8}")
    for name, rates in results.items():
        rate = statistics.median(rates)
        print(f"{name:<14} {rate:>10.0f} {rate / relay:>8.2f}")
    print(json.dumps({k: round(statistics.median(v)) for k, v in results.items()}))


if __name__ == "__main__":
    main()
