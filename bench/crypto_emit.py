"""Cost of emit-time signing and encryption in a single-row PostgreSQL business transaction.

Variants, interleaved in rounds so drift on the machine hits all alike:
  plain      add an order, commit
  emit       add an order, emit(...), commit                      (no sealer)
  sealed     the same with the Sealer, content-key window on (1000 events / 60 s)
  sealed_w0  the same with a new content key per event (window 0)
Two readers (billing, shipping) per event, P-256, as the walkthrough's policy has.
Also prints the sealer's own per-event cost, measured alone, at window 1000 and 0.

Usage:
  python bench/crypto_emit.py [--db URL] [--seconds 3] [--rounds 5]
Without --db it creates a throw-away PostgreSQL database at 127.0.0.1:5432 and drops it after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine

import outbox
from outbox import settings
from outbox import migrate as outbox_migrate
from outbox.crypto import KeyRing, Sealer, new_key
from outbox.crypto.policy import parse_policy
from outbox.envelope import format_time

# The same business transaction, with and without emit, as the emit overhead benchmark.
from emit_overhead import Base, plain, with_emit  # noqa: E402  (bench/ is the script's folder)

POLICY = {"readers": {"shop.order.*": ["billing", "shipping"]}, "trust": {"billing": ["shop"]}}


def rate(fn, engine, seconds, sealer):
    settings.configure(sealer=sealer) if sealer is not None else settings.reset()
    outbox.configure(source="/shop")
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn(engine)
        count += 1
    return count / elapsed


def keys() -> Path:
    folder = Path(tempfile.mkdtemp()) / "keys"
    new_key(folder, "shop", producer=True)
    new_key(folder, "billing")
    new_key(folder, "shipping")
    return folder


def seal_cost(sealer, n=3000) -> float:
    attrs = {"id": str(uuid.uuid4()), "type": "shop.order.created", "source": "/shop", "subject": "42",
             "time": format_time(dt.datetime.now(dt.timezone.utc))}
    data = json.dumps({"id": 42, "customer": "ann@example.com", "total": "19.90"}).encode()
    start = time.perf_counter()
    for _ in range(n):
        sealer.seal(attrs, data)
    return (time.perf_counter() - start) / n * 1e6


def run(url, seconds, rounds):
    outbox_migrate.upgrade(outbox_migrate.standalone_config(url))
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    folder = keys()
    policy = parse_policy(POLICY)
    windowed = Sealer(KeyRing.load(folder), policy, reuse_events=1000, reuse_seconds=60)
    per_event = Sealer(KeyRing.load(folder), policy, reuse_events=0)
    variants = {
        "plain": (plain, None), "emit": (with_emit, None),
        "sealed": (with_emit, windowed), "sealed_w0": (with_emit, per_event),
    }
    for fn, sealer in variants.values():
        rate(fn, engine, 0.3, sealer)
    results = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (fn, sealer) in variants.items():
            results[name].append(rate(fn, engine, seconds, sealer))
    engine.dispose()
    med = {name: statistics.median(v) for name, v in results.items()}
    us = {name: 1e6 / r for name, r in med.items()}
    print(f"{engine.dialect.name}: transactions/s (median of {rounds} rounds of {seconds}s)")
    for name in variants:
        print(f"  {name:10s} {med[name]:8.0f}/s  {us[name]:7.0f} µs/txn")
    for name in ("sealed", "sealed_w0"):
        extra = us[name] - us["emit"]
        print(f"  {name}: sign+encrypt adds {extra:.0f} µs = {extra / us['plain'] * 100:.1f}% of the plain "
              f"transaction, {extra / us['emit'] * 100:.1f}% of the transaction with emit")
    print(f"  sealer alone: window 1000: {seal_cost(windowed):.0f} µs/event; "
          f"window 0: {seal_cost(per_event, 500):.0f} µs/event (2 recipients)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.db:
        run(args.db, args.seconds, args.rounds)
        return
    import psycopg

    name = f"strangler_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        run(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", args.seconds, args.rounds)
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
