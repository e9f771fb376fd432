"""Cost of emit in a single-row ORM business transaction, side by side with the same transaction without it.

Three variants, interleaved in rounds so drift on the machine hits all alike:
  plain        add an order, commit
  emit         add an order, emit(session, "shop.order.created", order), commit
  extra_insert add an order, add a second small row (the cost floor of any outbox), commit

Usage:
  python bench/emit_overhead.py [--db URL] [--seconds 3] [--rounds 5] [--revision REV]
Without --db it runs on a temporary SQLite file and on PostgreSQL at 127.0.0.1:5432 when reachable.
--revision migrates the outbox only that far (e.g. strangler_0004, before the pending index was
dropped), to measure what a revision changed.
"""

from __future__ import annotations

import argparse
import decimal
import statistics
import tempfile
import time
import uuid

from sqlalchemy import Integer, Numeric, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from outbox import emit
from outbox import migrate as outbox_migrate


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "bench_orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer: Mapped[str] = mapped_column(String(100))
    total: Mapped[decimal.Decimal] = mapped_column(Numeric(10, 2))


class Audit(Base):
    __tablename__ = "bench_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    note: Mapped[str] = mapped_column(String(100))


def plain(engine):
    with Session(engine) as session:
        session.add(Order(customer="ann@example.com", total=decimal.Decimal("19.90")))
        session.commit()


def with_emit(engine):
    with Session(engine) as session:
        order = Order(customer="ann@example.com", total=decimal.Decimal("19.90"))
        session.add(order)
        emit(session, "shop.order.created", order)
        session.commit()


def extra_insert(engine):
    with Session(engine) as session:
        session.add(Order(customer="ann@example.com", total=decimal.Decimal("19.90")))
        session.add(Audit(note="order created"))
        session.commit()


VARIANTS = {"plain": plain, "emit": with_emit, "extra_insert": extra_insert}


def rate(fn, engine, seconds):
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn(engine)
        count += 1
    return count / elapsed


def run(url, seconds, rounds, revision="head"):
    outbox_migrate.upgrade(outbox_migrate.standalone_config(url), revision)
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    for fn in VARIANTS.values():  # warm up connections and statement caches
        rate(fn, engine, 0.3)
    results = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, fn in VARIANTS.items():
            results[name].append(rate(fn, engine, seconds))
    engine.dispose()
    med = {name: statistics.median(values) for name, values in results.items()}
    print(f"{engine.dialect.name}, outbox at {revision}: transactions/s (median of {rounds} rounds of {seconds}s)")
    for name in VARIANTS:
        print(f"  {name:13s} {med[name]:9.0f}/s  ratio to plain {med[name] / med['plain']:.2f}")
    print(f"  emit / extra_insert = {med['emit'] / med['extra_insert']:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", action="append")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--revision", default="head", help="outbox revision to migrate to (default: head)")
    args = parser.parse_args()
    urls = args.db
    if not urls:
        urls = [f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"]
        try:
            import psycopg

            name = f"strangler_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            urls.append(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
        except Exception as exc:  # PostgreSQL is optional here
            print(f"(PostgreSQL skipped: {exc})")
    for url in urls:
        run(url, args.seconds, args.rounds, args.revision)


if __name__ == "__main__":
    main()
