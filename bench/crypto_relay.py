"""Relay forwarding rate: plaintext rows, emit-time-encrypted rows, and encrypt_at = "relay".

``--relay real`` (the default) drains with ``outbox.relay.Relay`` itself, leases,
fencing and all. ``--relay loop`` is a minimal forwarding loop doing only the
relay's per-row work: read a batch of outbox rows in position order, build
envelopes (``Envelope.from_row``), apply the envelope transform, publish to the
file router (fsync per batch), mark the rows published. The loop runs faster
than the real relay, so the encryption share it shows is an upper bound.

Variants (the same N events each, PostgreSQL; their order turns each round). Each variant's rows
are written once, by ``emit`` itself, and kept in a table of their own; every round empties
(TRUNCATEs) the outbox and copies them in with one INSERT … SELECT, so a round costs the drain
and little else and many rounds fit in a run:
  plain        rows with JSON payloads, no transform
  emit_sealed  rows sealed at emit (window 1000), no transform: the relay forwards bytes
  relay_seal   plaintext rows, the relay transform signs and encrypts (window 1000)
  relay_seal_w0  the same with a new content key per event (window 0): the per-event cost

Each variant's CPU per event is printed too: the relay process's own (user + system), and that of
PostgreSQL's processes on this machine (Linux /proc; "n/a" elsewhere), to show where a sealed
row's extra cost lands. The ratio to plain is printed twice: the ratio of the variants' median
rates, and the median over rounds of each round's own ratio (a round runs every variant back
to back, so a slow minute of the machine weighs on both sides of its ratio).

--database-share also times, alone, the two statements PostgreSQL runs per batch for the
relay (the claim's SELECT in claim-index order, the mark's UPDATE by primary key) on plaintext
and on sealed rows, per row, and the WAL each mark writes: what a sealed row costs the
database, apart from the relay. --fillfactor N sets the outbox's fillfactor after migrating
(PostgreSQL's default is 100), to compare.

Usage:
  python bench/crypto_relay.py [--relay real|loop] [--events 5000] [--rounds 3] [--batch 200] [--database-share]
                               [--fillfactor N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session

import outbox
from outbox import emit, outbox_table, settings
from outbox import migrate as outbox_migrate
from outbox.crypto import KeyRing, Sealer, new_key, relay_transform
from outbox.crypto.policy import parse_policy
from outbox.envelope import Envelope
from outbox.routers import open_router

POLICY = {"readers": {"shop.order.*": ["billing", "shipping"]}, "trust": {"billing": ["shop"]}}
DATA = {"customer": "ann@example.com", "total": "19.90", "status": "new", "lines": 3}


class PostgresCpu:
    """CPU seconds used by this machine's PostgreSQL processes while the block runs (Linux /proc).

    A backend's counters vanish when its connection closes, and the relay discards its own
    connections at the end of a drain, so the PostgreSQL processes are read every 20 ms (all of
    /proc is scanned for new ones every 200 ms) and the last reading of each kept. ``seconds``
    stays None where /proc cannot be read; ``sampler_seconds`` is the CPU the sampling itself took
    in this process, to take off this process's own figure.
    """

    def __enter__(self):
        self.seconds = None
        self.sampler_seconds = 0.0
        self._start = self._scan()
        self._last = dict(self._start or {})
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._sampler.join()
        if self._start is not None:
            self._last.update(self._scan() or {})
            ticks = sum(now - self._start.get(pid, 0) for pid, now in self._last.items())
            self.seconds = ticks / os.sysconf("SC_CLK_TCK")

    def _sample(self):
        tick = 0
        while not self._stop.wait(0.02):
            tick += 1
            found = self._scan() if tick % 10 == 0 else self._read(list(self._last))
            self._last.update(found or {})
        self.sampler_seconds = time.thread_time()

    @classmethod
    def _scan(cls) -> dict[str, int] | None:
        try:
            return cls._read([p for p in os.listdir("/proc") if p.isdigit()])
        except OSError:
            return None

    @staticmethod
    def _read(pids: list[str]) -> dict[str, int]:
        ticks = {}
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    text = stat.read()
            except OSError:
                continue  # ended: its last reading stays
            if text[text.index("(") + 1:text.rindex(")")] == "postgres":
                fields = text[text.rindex(")") + 2:].split()
                ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
        return ticks


def fill(engine, n, sealer):
    settings.reset()
    outbox.configure(source="/shop", sealer=sealer)
    with Session(engine) as session:
        for i in range(n):
            emit(session, "shop.order.created", aggregate="order", key=str(i % 500), data={"id": i, **DATA})
            if i % 500 == 499:
                session.commit()
        session.commit()
    settings.reset()


def keep_fill(engine, n, sealer, template):
    """Emit ``n`` events into the emptied outbox and keep a copy of its rows in table ``template``."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {outbox_table.name}")
    fill(engine, n, sealer)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {template} AS SELECT * FROM {outbox_table.name}")


def refill(engine, template):
    """Empty the outbox (TRUNCATE: no dead rows left for the next claims to step over) and copy ``template`` in."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {outbox_table.name}")
        conn.exec_driver_sql(f"INSERT INTO {outbox_table.name} SELECT * FROM {template} ORDER BY position")


def forward_loop(engine, router, transform, batch) -> int:
    sent = 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                select(outbox_table).where(outbox_table.c.published_at.is_(None))
                .order_by(outbox_table.c.position).limit(batch)
            ).all()
            if not rows:
                return sent
            envelopes = [Envelope.from_row(row) for row in rows]
            if transform is not None:
                envelopes = [transform(e) for e in envelopes]
            results = router.publish(envelopes)
            assert all(r.ok for r in results)
            import datetime as dt

            conn.execute(
                update(outbox_table).where(outbox_table.c.position.in_([r.position for r in rows]))
                .values(published_at=dt.datetime.now(dt.timezone.utc))
            )
            sent += len(rows)


def forward_relay(engine, router, transform, batch) -> int:
    from outbox.relay import Relay, RelayOptions

    relay = Relay(engine, router, options=RelayOptions(batch=batch, notify=False), envelope_transform=transform,
                  owner="bench-crypto-relay")  # one owner across rounds: it keeps the partitions it took
    return relay.drain().published


CLAIM_SQL = (
    "SELECT position, id, aggregatetype, aggregateid, type, payload, timestamp, tracingspancontext, source, "
    "content_type, lease_partition, attempts FROM {t} WHERE published_at IS NULL AND dead_at IS NULL "
    "ORDER BY published_at, position LIMIT %s"
)
MARK_SQL = (
    "UPDATE {t} SET published_at = now(), published_by = 'bench' "
    "WHERE position = ANY(%s) AND CAST(published_at AS TEXT) IS NULL"
)


def database_share(engine, plain_url, events, batch, templates, rounds=3):
    """Return report lines: per row, the median claim and mark of ``batch`` rows alone, plaintext and sealed."""
    import psycopg

    table = outbox_table.name
    out = {"plain": ([], [], []), "emit_sealed": ([], [], [])}
    wal_position = "SELECT pg_current_wal_insert_lsn()"
    for _ in range(rounds):
        for variant in out:
            refill(engine, templates[variant])
            with psycopg.connect(plain_url, autocommit=True) as conn:
                conn.execute("SET enable_sort = off")  # as the relay's claim connection
                conn.execute("SET synchronous_commit = off")  # as the relay's mark connection
                cursor = conn.cursor(binary=True)
                for _ in range(events // batch):
                    wal_before = conn.execute(wal_position).fetchone()[0]  # outside the timing: a round trip
                    start = time.perf_counter()
                    rows = cursor.execute(CLAIM_SQL.format(t=table), (batch,)).fetchall()
                    claimed = time.perf_counter()
                    conn.execute(MARK_SQL.format(t=table), ([row[0] for row in rows],))
                    marked = time.perf_counter()
                    wal = conn.execute(f"SELECT pg_wal_lsn_diff(({wal_position}), %s)", (wal_before,)).fetchone()[0]
                    out[variant][0].append((claimed - start) / len(rows))
                    out[variant][1].append((marked - claimed) / len(rows))
                    out[variant][2].append(float(wal) / len(rows))  # the claim writes none: it is the mark's
    lines = [f"PostgreSQL alone, per row (median over {rounds} copies of {events} rows, batches of {batch}):"]
    for variant, (claims, marks, wal) in out.items():
        lines.append(f"  {variant:12s} claim {statistics.median(claims) * 1e6:5.1f} µs  "
                     f"mark {statistics.median(marks) * 1e6:5.1f} µs, WAL {statistics.median(wal):5.0f} bytes")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--relay", choices=("real", "loop"), default="real")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--database-share", action="store_true",
                        help="also time the claim and the mark alone, per row, on plaintext and sealed rows")
    parser.add_argument("--fillfactor", type=int, default=None,
                        help="set the outbox table's fillfactor after migrating (default: as the migrations leave it)")
    args = parser.parse_args()
    import psycopg

    folder = Path(tempfile.mkdtemp())
    keys = folder / "keys"
    new_key(keys, "shop", producer=True)
    new_key(keys, "billing")
    new_key(keys, "shipping")
    policy = parse_policy(POLICY)
    sealer = Sealer(KeyRing.load(keys), policy, reuse_events=1000, reuse_seconds=60)
    per_event = Sealer(KeyRing.load(keys), policy, reuse_events=0)
    variants = {"plain": (None, None), "emit_sealed": (sealer, None), "relay_seal": (None, relay_transform(sealer)),
                "relay_seal_w0": (None, relay_transform(per_event))}

    name = f"strangler_bench_{uuid.uuid4().hex[:8]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        outbox_migrate.upgrade(outbox_migrate.standalone_config(url))
        engine = create_engine(url)
        if args.fillfactor is not None:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE {outbox_table.name} SET (fillfactor = {args.fillfactor})")
        with engine.connect() as conn:
            options = conn.exec_driver_sql(
                "SELECT reloptions FROM pg_class WHERE relname = %s", (outbox_table.name,)).scalar()
        templates = {v: f"bench_rows_{v}" for v in ("plain", "emit_sealed")}
        keep_fill(engine, args.events, None, templates["plain"])
        keep_fill(engine, args.events, sealer, templates["emit_sealed"])
        results = {v: [] for v in variants}
        cpu = {v: ([], []) for v in variants}  # per event: the relay process, PostgreSQL
        names = list(variants)
        for round_ in range(args.rounds):
            for k in range(len(names)):  # the order turns each round: no variant always runs after another
                variant = names[(round_ + k) % len(names)]
                emit_sealer, transform = variants[variant]
                refill(engine, templates["plain" if emit_sealer is None else "emit_sealed"])
                router = open_router(f"file://{folder}/events-{variant}-{round_}")
                forward = forward_relay if args.relay == "real" else forward_loop
                own = os.times()
                with PostgresCpu() as database:
                    start = time.perf_counter()
                    sent = forward(engine, router, transform, args.batch)
                    elapsed = time.perf_counter() - start
                own_after = os.times()
                assert sent == args.events, f"{variant}: forwarded {sent} of {args.events}"
                results[variant].append(sent / elapsed)
                own_cpu = own_after.user + own_after.system - own.user - own.system - database.sampler_seconds
                cpu[variant][0].append(own_cpu / sent)
                if database.seconds is not None:
                    cpu[variant][1].append(database.seconds / sent)
                router.close()
        share = database_share(engine, url.replace("+psycopg", ""), args.events, args.batch, templates) \
            if args.database_share else []
        engine.dispose()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    med = {v: statistics.median(r) for v, r in results.items()}
    print(f"{'relay' if args.relay == 'real' else 'forwarding loop'}, PostgreSQL -> file router, {args.events} events, batch {args.batch}, "
          f"median of {args.rounds} rounds; outbox table options: {options or 'none (fillfactor 100)'}")
    for variant in variants:
        per_round = statistics.median(r / p for r, p in zip(results[variant], results["plain"]))
        print(f"  {variant:13s} {med[variant]:8.0f} events/s  {1e6 / med[variant]:5.1f} µs/event  "
              f"ratio to plain {med[variant] / med['plain']:.2f}, per round {per_round:.2f}  "
              f"(rounds: {', '.join(f'{r:.0f}' for r in results[variant])})")
    print("CPU per event, median of the rounds:")
    for variant in variants:
        relay_cpu, database_cpu = cpu[variant]
        database_text = f"{statistics.median(database_cpu) * 1e6:5.1f} µs" if database_cpu else "  n/a"
        print(f"  {variant:13s} relay process {statistics.median(relay_cpu) * 1e6:5.1f} µs  PostgreSQL {database_text}")
    print("\n".join(share))



if __name__ == "__main__":
    main()
