"""Cost of emit-time signing and encryption in a single-row PostgreSQL business transaction.

Variants, interleaved one transaction at a time (the order turning each cycle) so that drift
on the machine, which moves a transaction's time by more than sealing costs, hits all alike:
  plain      add an order, commit
  emit       add an order, emit(...), commit                      (no sealer)
  sealed     the same with the Sealer, content-key window on (1000 events / 60 s)
  sealed_w0  the same with a new content key per event (window 0)
Two readers (billing, shipping) per event, P-256, as the walkthrough's policy has.
Each transaction is timed on its own; a variant's cost is the median of its transactions.
The difference sealed - emit is also given for each fifth of the run, to show its spread.
Also prints the sealer's own per-event cost, measured alone, at window 1000 and 0.

Usage:
  python bench/crypto_emit.py [--db URL] [--transactions 3000] [--revision REV] [--fillfactor N]
--revision migrates the outbox only that far (e.g. strangler_0004, before the pending index was
dropped), to measure what a revision changed; --fillfactor sets the outbox table's fillfactor
after migrating (PostgreSQL's default is 100), to measure what emit pays for pages left part
empty. Without --db it creates a throw-away PostgreSQL database at 127.0.0.1:5432 and drops it after.
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


def timed(fn, engine, sealer) -> float:
    """Seconds of one business transaction, with ``sealer`` configured (None: no encryption)."""
    settings.configure(sealer=sealer) if sealer is not None else settings.reset()
    outbox.configure(source="/shop")
    start = time.perf_counter()
    fn(engine)
    return time.perf_counter() - start


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


def run(url, transactions, revision="head", fillfactor=None):
    outbox_migrate.upgrade(outbox_migrate.standalone_config(url), revision)
    engine = create_engine(url)
    if fillfactor is not None:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {outbox.outbox_table.name} SET (fillfactor = {fillfactor})")
    Base.metadata.create_all(engine)
    folder = keys()
    policy = parse_policy(POLICY)
    windowed = Sealer(KeyRing.load(folder), policy, reuse_events=1000, reuse_seconds=60)
    per_event = Sealer(KeyRing.load(folder), policy, reuse_events=0)
    variants = {
        "plain": (plain, None), "emit": (with_emit, None),
        "sealed": (with_emit, windowed), "sealed_w0": (with_emit, per_event),
    }
    names = list(variants)
    for name in names:  # warm up connections, statement caches and the content keys
        for _ in range(50):
            timed(variants[name][0], engine, variants[name][1])
    times: dict[str, list[float]] = {name: [] for name in names}
    for cycle in range(transactions):
        for k in range(len(names)):
            name = names[(cycle + k) % len(names)]
            fn, sealer = variants[name]
            times[name].append(timed(fn, engine, sealer))
    engine.dispose()
    us = {name: statistics.median(values) * 1e6 for name, values in times.items()}
    print(f"{engine.dialect.name}, outbox at {revision}"
          f"{f', fillfactor {fillfactor}' if fillfactor is not None else ''}: {transactions} transactions per variant, "
          "interleaved one at a time")
    for name in names:
        print(f"  {name:10s} median {us[name]:7.0f} µs/txn ({1e6 / us[name]:.0f}/s)")
    for name in ("sealed", "sealed_w0"):
        extra = us[name] - us["emit"]
        fifths = []
        for part in range(5):
            window = slice(part * transactions // 5, (part + 1) * transactions // 5)
            fifths.append((statistics.median(times[name][window]) - statistics.median(times["emit"][window]))
                          / statistics.median(times["emit"][window]) * 100)
        print(f"  {name}: sign+encrypt adds {extra:.0f} µs = {extra / us['plain'] * 100:.1f}% of the plain "
              f"transaction, {extra / us['emit'] * 100:.1f}% of the transaction with emit "
              f"(each fifth of the run: {', '.join(f'{f:.1f}%' for f in fifths)})")
    print(f"  sealer alone: window 1000: {seal_cost(windowed):.0f} µs/event; "
          f"window 0: {seal_cost(per_event, 500):.0f} µs/event (2 recipients)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db")
    parser.add_argument("--transactions", type=int, default=3000, help="per variant (default 3000)")
    parser.add_argument("--revision", default="head", help="outbox revision to migrate to (default: head)")
    parser.add_argument("--fillfactor", type=int, help="set the outbox table's fillfactor after migrating")
    args = parser.parse_args()
    if args.db:
        run(args.db, args.transactions, args.revision, args.fillfactor)
        return
    import psycopg

    name = f"strangler_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        run(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", args.transactions, args.revision, args.fillfactor)
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
