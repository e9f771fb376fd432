"""The processes of a fault scenario: ``python -m outbox.faults.worker write|consume ...``.

``write`` commits sequenced events: each transaction emits 1..per_txn events of
one of the writer's own aggregates, whose data carries the aggregate's next
sequence number. When a commit fails (the connection was cut) the writer finds
out whether the transaction landed, by its first event id, and either moves
on or writes the same sequence numbers again, so the report it leaves is
exactly what is committed. With ``--holds`` it also keeps transactions open
for ``--hold`` seconds after emitting, so their early positions commit late.

``consume`` runs a ``Consumer`` with an inbox whose handler records each
effect in the effects table, and logs every finished delivery.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, insert, select

from .stage import AGGREGATE, EVENT_TYPE, effects_table


def _write(args: argparse.Namespace) -> int:
    import outbox
    from outbox.table import get_outbox_table

    outbox.configure(table_name=args.table, source="/strangler-verify")
    engine = create_engine(args.db, pool_pre_ping=True)
    table = get_outbox_table(args.table)
    rng = random.Random(args.seed)
    aggs = [f"a{n}" for n in range(args.first, args.stop)]
    next_seq = {agg: 0 for agg in aggs}
    stop_file = Path(args.stop_file)
    written = 0
    pad = "x" * args.pad
    report = Path(args.report)

    def save() -> None:
        tmp = report.with_suffix(".tmp")
        tmp.write_text(json.dumps({agg: n for agg, n in next_seq.items() if n}))
        os.replace(tmp, report)

    def committed(event_id: str) -> bool:
        for _ in range(100):
            try:
                with engine.connect() as conn:
                    return conn.execute(select(table.c.id).where(table.c.id == event_id)).first() is not None
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("database unreachable for 10 s")

    def transaction(agg: str, count: int, hold: float = 0.0) -> None:
        nonlocal written
        while True:
            first = None
            try:
                with engine.begin() as conn:
                    for i in range(count):
                        data = {"agg": agg, "seq": next_seq[agg] + i}
                        if pad:
                            data["pad"] = pad
                        event_id = outbox.emit(conn, EVENT_TYPE, aggregate=AGGREGATE, key=agg, data=data)
                        first = first or event_id
                    if hold:
                        time.sleep(hold)
            except Exception as exc:
                print(f"writer: transaction failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                      file=sys.stderr)
                if first is None or not committed(first):
                    time.sleep(0.05)
                    continue
            next_seq[agg] += count
            written += count
            return

    holds_left = args.holds
    try:
        while written < args.max_events and not stop_file.exists():
            agg = rng.choice(aggs)
            if holds_left and rng.random() < 0.1:
                # A long transaction: its rows take early positions and commit after later ones.
                holds_left -= 1
                transaction(agg, rng.randint(1, args.per_txn), hold=args.hold)
            else:
                transaction(agg, min(rng.randint(1, args.per_txn), args.max_events - written))
            if written % 20 == 0 or args.pace:
                save()
            if args.pace:
                time.sleep(args.pace)
    finally:
        save()
        engine.dispose()
    return 0


class _DieBeforeAck:
    """A subscription wrapper that SIGKILLs its own process, now and then, after commit and before ack."""

    def __init__(self, inner, probability: float, rng: random.Random):
        self.inner, self.probability, self.rng = inner, probability, rng

    def receive(self, max_events: int = 100, timeout: float = 1.0):
        deliveries = self.inner.receive(max_events=max_events, timeout=timeout)
        for delivery in deliveries:
            ack = delivery._ack

            def die_then_ack(ack=ack):
                if self.rng.random() < self.probability:
                    os.kill(os.getpid(), signal.SIGKILL)
                if callable(ack):
                    ack()

            delivery._ack = die_then_ack
        return deliveries

    def close(self) -> None:
        self.inner.close()


def _consume(args: argparse.Namespace) -> int:
    from outbox.routers import open_subscription

    engine = create_engine(args.db, pool_pre_ping=True)
    consumer = recording_consumer(args.name, engine, args.table, Path(args.log), handler_ms=args.handler_ms)
    subscription = open_subscription(args.router, group=args.name, destinations=[AGGREGATE, "blocked"])
    if args.die_before_ack:
        subscription = _DieBeforeAck(subscription, args.die_before_ack, random.Random())
    idle_since = None
    try:
        while True:
            before = consumer.stats.total()
            _run_once(consumer, subscription, args.batch)
            if consumer.stats.total() == before:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= args.idle_seconds:
                    break
            else:
                idle_since = None
    finally:
        subscription.close()
        engine.dispose()
    print(json.dumps(consumer.stats.__dict__))
    return 0


def _run_once(consumer, subscription, batch: int) -> None:
    """Handle one receive's deliveries in order (what ``Consumer.run`` does per turn)."""
    deliveries = subscription.receive(max_events=batch, timeout=0.5)
    for index, delivery in enumerate(deliveries):
        if consumer.handle(delivery) == "retry":
            for rest in deliveries[index + 1:]:
                rest.nack()
            time.sleep(0.2)
            break


def recording_consumer(name: str, engine, table: str, log: Path, *, handler_ms: float = 0.0):
    """A ``Consumer`` whose handler writes one effects row per run and logs each delivery's outcome."""
    from outbox.consumer import Consumer

    effects = effects_table(table)

    class Recording(Consumer):
        def handle(self, delivery):
            outcome = super().handle(delivery)
            event_id = delivery.envelope.id if delivery.envelope is not None else delivery.location
            line = json.dumps({"id": event_id, "outcome": outcome}) + "\n"
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
            return outcome

    consumer = Recording(name, engine)

    @consumer.handler("fault.*")
    def record(event, session):
        data = event.data or {}
        if handler_ms:
            time.sleep(handler_ms / 1000 * random.random() * 2)
        session.execute(insert(effects).values(
            event_id=event.id, agg=str(data.get("agg", event.subject)), seq=int(data.get("seq", -1)),
            pid=os.getpid(),
        ))

    return consumer


def main(argv: list[str] | None = None) -> int:
    """Parse the role and run it."""
    parser = argparse.ArgumentParser(prog="python -m outbox.faults.worker")
    roles = parser.add_subparsers(dest="role", required=True)
    w = roles.add_parser("write")
    w.add_argument("--db", required=True)
    w.add_argument("--table", required=True)
    w.add_argument("--first", type=int, required=True)
    w.add_argument("--stop", type=int, required=True)
    w.add_argument("--max-events", type=int, required=True)
    w.add_argument("--pace", type=float, default=0.0)
    w.add_argument("--stop-file", required=True)
    w.add_argument("--pad", type=int, default=0)
    w.add_argument("--per-txn", type=int, default=3)
    w.add_argument("--hold", type=float, default=0.0)
    w.add_argument("--holds", type=int, default=0)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--report", required=True)
    c = roles.add_parser("consume")
    c.add_argument("--db", required=True)
    c.add_argument("--table", required=True)
    c.add_argument("--router", required=True)
    c.add_argument("--name", required=True)
    c.add_argument("--handler-ms", type=float, default=0.0)
    c.add_argument("--die-before-ack", type=float, default=0.0)
    c.add_argument("--batch", type=int, default=20)
    c.add_argument("--idle-seconds", type=float, default=2.0)
    c.add_argument("--log", required=True)
    args = parser.parse_args(argv)
    return _write(args) if args.role == "write" else _consume(args)


if __name__ == "__main__":
    sys.exit(main())
