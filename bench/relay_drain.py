"""Drain rate of a PostgreSQL outbox backlog into a broker, against the raw client's batched rate.

For each broker, measured side by side in one run on the same backlog:
  raw     the broker client alone: pre-built events, batches of --batch, acks awaited per batch
          (Redis: one pipeline of XADD per batch; others: the router's own publish)
  naive   a serial loop: SELECT a batch, publish it, UPDATE it published, commit, repeat
  relay   outbox.relay.Relay (leases, fencing, claim of the next batch overlapping this publish)
  relay without overlap   the same with RelayOptions(overlap=False): claim, publish, mark in turn
The backlog is reset (published_at = NULL, then VACUUM FULL) between runs; streams/exchanges/subjects are new per run.

Usage:
  python bench/relay_drain.py [--events 200000] [--batch 200] [--brokers redis,amqp,nats,mqtt]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import time
import uuid

from sqlalchemy import create_engine, select, text, update
from sqlalchemy.orm import Session

import outbox
from outbox import emit, settings
from outbox import migrate as outbox_migrate
from outbox.envelope import Envelope
from outbox.relay import Relay, RelayOptions
from outbox.routers import Destinations, open_router
from outbox.table import get_outbox_table

t = get_outbox_table()
URLS = {
    "redis": "redis://127.0.0.1:6379/0",
    "amqp": "amqp://guest:guest@127.0.0.1:5672/%2F",
    "nats": "nats://127.0.0.1:4222",
    "mqtt": "mqtt://127.0.0.1:1883",
}
DATA = {"customer": "ann@example.com", "total": "19.90", "status": "new", "lines": 3}


def fill(engine, n: int) -> None:
    settings.reset()
    outbox.configure(source="/shop")
    done = 0
    while done < n:
        with Session(engine) as session:
            for i in range(done, min(n, done + 5000)):
                emit(session, "shop.order.created", aggregate="order", key=str(i % 1000), data={"id": i, **DATA})
            session.commit()
        done = min(n, done + 5000)


def reset(engine) -> None:
    """Make every row pending again, in the same physical state for every variant.

    VACUUM FULL rewrites the table and its indexes compactly: a drain leaves a
    dead row version and dead index entries per row, and a variant run on a
    table that earlier drains bloated reads more pages than one run on a fresh
    table, which is how the variants would otherwise differ.
    """
    with engine.begin() as conn:
        conn.execute(update(t).values(published_at=None, published_by=None))
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text(f"VACUUM FULL ANALYZE {t.name}"))


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raw(engine, broker: str, batch: int, n: int, prefix: str) -> float:
    with engine.connect() as conn:
        events = [Envelope.from_row(r) for r in conn.execute(select(t).order_by(t.c.position).limit(n))]
    if broker == "redis":
        import redis

        from outbox.routers.redis import entry_fields

        client = redis.Redis.from_url(URLS["redis"])
        started = time.perf_counter()
        for start in range(0, len(events), batch):
            pipe = client.pipeline(transaction=False)
            for event in events[start:start + batch]:
                pipe.xadd(prefix + "order", entry_fields(event))
            pipe.execute()
        elapsed = time.perf_counter() - started
        client.close()
        return len(events) / elapsed
    router = open_router(URLS[broker], destinations=Destinations(prefix=prefix))
    router.publish(events[:1])  # connect and declare outside the timing
    started = time.perf_counter()
    for start in range(0, len(events), batch):
        router.publish(events[start:start + batch])
    elapsed = time.perf_counter() - started
    router.close()
    return len(events) / elapsed


def naive(engine, broker: str, batch: int, prefix: str) -> tuple[float, float]:
    router = open_router(URLS[broker], destinations=Destinations(prefix=prefix))
    published = 0
    started, cpu0 = time.perf_counter(), cpu()
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                select(t).where(t.c.published_at.is_(None)).order_by(t.c.published_at, t.c.position).limit(batch)
            ).all()
            if not rows:
                break
            results = router.publish([Envelope.from_row(r) for r in rows])
            ok = [r.position for r, res in zip(rows, results) if res.ok]
            conn.execute(update(t).where(t.c.position.in_(ok)).values(published_at=dt.datetime.now(dt.timezone.utc)))
            published += len(ok)
    elapsed, used = time.perf_counter() - started, cpu() - cpu0
    router.close()
    return published / elapsed, used / max(published, 1)


def relay(engine, broker: str, batch: int, prefix: str, overlap: bool = True) -> tuple[float, float]:
    router = open_router(URLS[broker], destinations=Destinations(prefix=prefix))
    r = Relay(engine, router, options=RelayOptions(batch=batch, overlap=overlap, notify=False))
    started, cpu0 = time.perf_counter(), cpu()
    stats = r.drain()
    elapsed, used = time.perf_counter() - started, cpu() - cpu0
    router.close()
    return stats.published / elapsed, used / max(stats.published, 1)


def cleanup(broker: str, prefixes: list[str]) -> None:
    if broker == "redis":
        import redis

        client = redis.Redis.from_url(URLS["redis"])
        for p in prefixes:
            client.delete(p + "order")
        client.close()
    elif broker == "nats":
        import asyncio

        import nats

        async def drop():
            nc = await nats.connect(URLS["nats"])
            js = nc.jetstream()
            for p in prefixes:
                try:
                    await js.delete_stream(p + "order")
                except Exception:
                    pass
            await nc.close()

        asyncio.run(drop())
    elif broker == "amqp":
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(URLS["amqp"]))
        ch = conn.channel()
        for p in prefixes:
            ch.exchange_delete(p + "order")
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--brokers", default="redis,amqp,nats,mqtt")
    args = parser.parse_args()

    admin = create_engine(args.db, isolation_level="AUTOCOMMIT")
    name = f"strangler_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        outbox_migrate.upgrade(outbox_migrate.standalone_config(url))
        engine = create_engine(url)
        started = time.perf_counter()
        fill(engine, args.events)
        reset(engine)
        print(f"backlog: {args.events} rows in {time.perf_counter() - started:.1f}s; batch {args.batch}; "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        for broker in args.brokers.split(","):
            prefixes = [f"b{uuid.uuid4().hex[:6]}-" for _ in range(4)]
            raw_rate = raw(engine, broker, args.batch, args.events, prefixes[0])
            reset(engine)
            naive_rate, naive_cpu = naive(engine, broker, args.batch, prefixes[1])
            reset(engine)
            relay_rate, relay_cpu = relay(engine, broker, args.batch, prefixes[2])
            reset(engine)
            serial_rate, _ = relay(engine, broker, args.batch, prefixes[3], overlap=False)
            reset(engine)
            cleanup(broker, prefixes)
            print(
                f"{broker:6} raw {raw_rate:9.0f}/s   naive {naive_rate:8.0f}/s ({naive_rate / raw_rate:.2f}x)   "
                f"relay {relay_rate:8.0f}/s ({relay_rate / raw_rate:.2f}x)   "
                f"relay without overlap {serial_rate:8.0f}/s ({serial_rate / raw_rate:.2f}x)   "
                f"CPU/event naive {naive_cpu * 1e6:.0f}us relay {relay_cpu * 1e6:.0f}us "
                f"({relay_cpu / naive_cpu:.2f}x)   load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


if __name__ == "__main__":
    main()
