"""Commit → publish latency with PostgreSQL NOTIFY, and relay CPU at a steady rate, against baselines.

latency (default 1,000 events/s for --seconds):
  a writer process (the monolith) commits one event per transaction, paced; the relay (NOTIFY
  on) publishes to Redis; each event's latency is from its commit returning in the writer to
  the router's ack in the relay (both on CLOCK_MONOTONIC).
  Baselines measured in the same run: the NOTIFY wake-up alone (a NOTIFY committed by another
  process → a LISTEN connection receives it, one per event interval) and one batch publish (XADD
  of one event, acked), both at the run's pace (one per 1/rate s, as the relay publishes them)
  and back to back; and the two composed with nothing between (the thread that reads the LISTEN
  socket publishes at once), the least any relay could do.
cpu (default 2,000 events/s):
  a writer process commits 10 events per transaction, paced; this process relays them to Redis,
  first with outbox.relay.Relay, then with a naive serial loop (SELECT batch, publish, UPDATE,
  sleep 10 ms when empty); CPU seconds of this process per event, side by side.

Usage:
  python bench/relay_latency.py latency [--rate 1000] [--seconds 10] [--writers 1]
  python bench/relay_latency.py cpu [--rate 2000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import resource
import statistics
import threading
import time
import uuid

from sqlalchemy import create_engine, select, update

from outbox import emit
from outbox import migrate as outbox_migrate
from outbox.envelope import Envelope
from outbox.relay import Relay, RelayOptions
from outbox.routers import Destinations, open_router
from outbox.table import get_outbox_table

t = get_outbox_table()
REDIS = "redis://127.0.0.1:6379/0"
COALESCE = float(os.environ.get("COALESCE", "0"))  # the relay's default
ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def drop_streams(pattern: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS)
    for key in client.scan_iter(match=pattern):
        client.delete(key)
    client.close()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class TimedRouter:
    """Wraps a router; records when each event's ack came back."""

    def __init__(self, inner):
        self.inner = inner
        self.acked: dict[str, float] = {}

    def publish(self, batch):
        results = self.inner.publish(batch)
        now = time.perf_counter()
        for r in results:
            if r.ok:
                self.acked.setdefault(r.event_id, now)
        return results

    def close(self):
        self.inner.close()


def _notify_sender(conninfo: str, samples: int, gap: float, sent) -> None:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as writer:
        for _ in range(samples):
            writer.execute("NOTIFY bench_wake")
            sent.put(time.perf_counter())  # CLOCK_MONOTONIC: comparable across processes
            time.sleep(gap)


def notify_baseline(url: str, samples: int = 300, gap: float = 0.001) -> list[float]:
    """NOTIFY wake-up: from the sender's commit returning (another process) to the listener receiving it.

    One NOTIFY every ``gap`` seconds: the pace of the events in the run.
    """
    import psycopg

    conninfo = create_engine(url).url.set(drivername="postgresql").render_as_string(hide_password=False)
    out = []
    sent = multiprocessing.Queue()
    with psycopg.connect(conninfo, autocommit=True) as listener:
        listener.execute('LISTEN "bench_wake"')
        sender = multiprocessing.Process(target=_notify_sender, args=(conninfo, samples, gap, sent))
        sender.start()
        received = []
        for _ in listener.notifies(timeout=samples * 0.01 + 10, stop_after=samples):
            received.append(time.perf_counter())
        sender.join()
    for at in received:
        out.append(at - sent.get(timeout=5))
    return out


def floor_baseline(url: str, samples: int = 300, gap: float = 0.001) -> list[float]:
    """Wake-up and publish composed, with nothing between: the least any relay could do.

    Another process commits a NOTIFY every ``gap`` seconds; the thread that reads
    the LISTEN socket publishes one event at once (no claim, no hand-off, no
    bookkeeping). Latency from the sender's commit returning to the router's ack.
    """
    import select

    import psycopg

    conninfo = create_engine(url).url.set(drivername="postgresql").render_as_string(hide_password=False)
    router = open_router(REDIS, destinations=Destinations(prefix="benchlat-"))
    event = Envelope(id=str(uuid.uuid4()), source="/b", type="shop.order.created", subject="1",
                     time=dt.datetime.now(dt.timezone.utc), data=b"{}", aggregatetype="order", partitionkey="1")
    acked = []
    sent = multiprocessing.Queue()
    with psycopg.connect(conninfo, autocommit=True) as listener:
        listener.execute('LISTEN "bench_wake"')
        pgconn = listener.pgconn
        sender = multiprocessing.Process(target=_notify_sender, args=(conninfo, samples, gap, sent))
        sender.start()
        while len(acked) < samples and select.select([pgconn.socket], [], [], 10)[0]:
            pgconn.consume_input()
            while pgconn.notifies() is not None:
                router.publish([event])
                acked.append(time.perf_counter())
        sender.join()
    router.close()
    return [at - sent.get(timeout=5) for at in acked]


def publish_baseline(samples: int = 300, gap: float = 0.0) -> list[float]:
    """One batch publish: XADD of one event, acked; back to back, or one every ``gap`` seconds.

    Back to back, Redis and this process never go idle between two calls. At
    the pace of the run (one event a millisecond at 1,000/s) each publish
    starts from idle, as the relay's do: a round trip that costs more.
    """
    router = open_router(REDIS, destinations=Destinations(prefix="benchlat-"))
    event = Envelope(id=str(uuid.uuid4()), source="/b", type="shop.order.created", subject="1",
                     time=dt.datetime.now(dt.timezone.utc), data=b"{}", aggregatetype="order", partitionkey="1")
    out = []
    for _ in range(samples):
        if gap:
            time.sleep(gap)
        started = time.perf_counter()
        router.publish([event])
        out.append(time.perf_counter() - started)
    router.close()
    return out


def latency_writer(url: str, rate: float, seconds: float, ready, committed) -> None:
    """The monolith: one event per transaction, paced; reports (event id, commit returned at)."""
    engine = create_engine(url)
    ready.wait()
    interval = 1.0 / rate
    start = time.perf_counter()
    n = 0
    out = []
    while time.perf_counter() - start < seconds:
        delay = start + n * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        with engine.begin() as conn:
            event_id = emit(conn, "shop.order.created", aggregate="order", key=str(n % 100), data={"n": n})
        out.append((event_id, time.perf_counter()))
        n += 1
    committed.put((out, n / (time.perf_counter() - start)))
    engine.dispose()


def latency(url: str, rate: int, seconds: float, writers: int = 1) -> None:
    engine = create_engine(url, pool_size=4)
    router = TimedRouter(open_router(REDIS, destinations=Destinations(prefix=f"benchlat{uuid.uuid4().hex[:6]}-")))
    relay = Relay(engine, router, options=RelayOptions(poll_interval=1.0, coalesce=COALESCE))
    runner = threading.Thread(target=relay.run)
    runner.start()
    time.sleep(1)
    ready, queue = multiprocessing.Event(), multiprocessing.Queue()
    # Several writer processes when one cannot commit `rate` single-event transactions a second alone.
    processes = [multiprocessing.Process(target=latency_writer, args=(url, rate / writers, seconds, ready, queue))
                 for _ in range(writers)]
    for process in processes:
        process.start()
    ready.set()
    pairs, achieved = [], 0.0
    for _ in processes:
        some, rate_of_one = queue.get(timeout=seconds + 60)
        pairs.extend(some)
        achieved += rate_of_one
    for process in processes:
        process.join()
    committed = dict(pairs)
    deadline = time.monotonic() + 30
    while len(router.acked) < len(committed) and time.monotonic() < deadline:
        time.sleep(0.05)
    relay.stop()
    runner.join(30)
    router.close()
    lat = [router.acked[i] - c for i, c in committed.items() if i in router.acked]
    gap = 1.0 / rate
    wake = statistics.median(notify_baseline(url, gap=gap))
    back_to_back = statistics.median(publish_baseline())
    paced = statistics.median(publish_baseline(gap=gap))
    floor = statistics.median(floor_baseline(url, gap=gap))
    print(f"rate asked {rate}/s, achieved {achieved:.0f}/s, events {len(committed)}, published {len(lat)}")
    print(f"commit→publish  p50 {statistics.median(lat) * 1e3:.3f} ms  p99 {pct(lat, 0.99) * 1e3:.2f} ms  "
          f"max {max(lat) * 1e3:.2f} ms")
    print(f"NOTIFY wake-up p50 {wake * 1e3:.3f} ms (one every {gap * 1e3:.1f} ms)")
    print(f"one batch publish p50: at the run's pace {paced * 1e3:.3f} ms (sum with wake-up {(wake + paced) * 1e3:.3f} ms); "
          f"back to back {back_to_back * 1e3:.3f} ms (sum {(wake + back_to_back) * 1e3:.3f} ms)")
    print(f"the two composed, nothing between (LISTEN socket read → publish in one thread) p50 {floor * 1e3:.3f} ms")
    print(f"load average {os.getloadavg()[0]:.2f}")
    engine.dispose()


def writer_process(url: str, rate: int, seconds: float, ready) -> None:
    engine = create_engine(url)
    per_tx = 10
    interval = per_tx / rate
    ready.wait()
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        delay = start + (n / per_tx) * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        with engine.begin() as conn:
            for _ in range(per_tx):
                emit(conn, "shop.order.created", aggregate="order", key=str(n % 100), data={"n": n})
                n += 1
    engine.dispose()


def cpu_now() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def naive_loop(engine, router, stop: threading.Event) -> int:
    published = 0
    while not stop.is_set():
        with engine.begin() as conn:
            rows = conn.execute(select(t).where(t.c.published_at.is_(None))
                                .order_by(t.c.published_at, t.c.position).limit(200)).all()
            if rows:
                results = router.publish([Envelope.from_row(r) for r in rows])
                ok = [r.position for r, res in zip(rows, results) if res.ok]
                conn.execute(update(t).where(t.c.position.in_(ok))
                             .values(published_at=dt.datetime.now(dt.timezone.utc)))
                published += len(ok)
        if not rows:
            time.sleep(0.01)
    return published


def cpu(url: str, rate: int, seconds: float) -> None:
    engine = create_engine(url)
    out = {}
    for variant in ("relay", "naive"):
        router = open_router(REDIS, destinations=Destinations(prefix=f"benchcpu{uuid.uuid4().hex[:6]}-"))
        ready = multiprocessing.Event()
        writer = multiprocessing.Process(target=writer_process, args=(url, rate, seconds, ready))
        writer.start()
        stop = threading.Event()
        result: dict = {}
        if variant == "relay":
            relay = Relay(engine, router, options=RelayOptions(coalesce=COALESCE))
            runner = threading.Thread(target=lambda: result.setdefault("stats", relay.run()))
        else:
            runner = threading.Thread(target=lambda: result.setdefault("n", naive_loop(engine, router, stop)))
        runner.start()
        time.sleep(1)
        cpu0, wall0 = cpu_now(), time.perf_counter()
        ready.set()
        writer.join()
        time.sleep(0.5)
        used, wall = cpu_now() - cpu0, time.perf_counter() - wall0
        if variant == "relay":
            relay.stop()
        stop.set()
        runner.join(30)
        router.close()
        count = result["stats"].published if variant == "relay" else result["n"]
        out[variant] = (used, count, wall)
        print(f"{variant:6} published {count} in {wall:.1f}s, CPU {used:.2f}s = {used / max(count, 1) * 1e6:.0f} us/event "
              f"({used / wall * 100:.0f}% of a core)", flush=True)
    ratio = (out["relay"][0] / out["relay"][1]) / (out["naive"][0] / out["naive"][1])
    print(f"relay CPU / naive CPU per event: {ratio:.2f}x; load average {os.getloadavg()[0]:.2f}")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["latency", "cpu"], nargs="?", default="latency")
    parser.add_argument("--rate", type=int)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--writers", type=int, default=1, help="latency: writer processes sharing --rate")
    args = parser.parse_args()
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    name = f"strangler_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        outbox_migrate.upgrade(outbox_migrate.standalone_config(url))
        if args.mode == "latency":
            latency(url, args.rate or 1000, args.seconds, args.writers)
        else:
            cpu(url, args.rate or 2000, args.seconds)
    finally:
        drop_streams("benchlat*")
        drop_streams("benchcpu*")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


if __name__ == "__main__":
    main()
