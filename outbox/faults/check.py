"""The checker: what the broker really holds and what the consumer really did, against what was committed.

* lost: a committed (aggregate, seq) that is not on the broker, or that no
  handler effect records;
* order violations: the first delivery of an aggregate's events, in broker
  order, skipping a sequence number, and the same for the handler's effects
  in the order they committed;
* effects twice: an event whose handler effect committed more than once
  (the inbox failed to absorb a duplicate delivery).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from typing import Any, Iterable

from sqlalchemy import select

from .stage import Stage


@dataclasses.dataclass
class Figures:
    """One scenario's result: the figures the issue asks for, and the verdict."""

    scenario: str
    database: str = ""
    broker: str = ""
    produced: int = 0
    delivered: int = 0
    duplicates_delivered: int = 0
    duplicates_absorbed: int = 0
    lost: int = 0
    order_violations: int = 0
    effects_twice: int = 0
    max_lag: float = 0.0
    broker_copies: int = 0
    faults: int = 0
    seconds: float = 0.0
    #: The private name of the run: its tables and broker destinations start with it.
    stage: str = ""
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Nothing lost, order kept, no effect twice, and at least one event went through."""
        return self.produced > 0 and not (self.lost or self.order_violations or self.effects_twice)

    def line(self) -> str:
        """The one line of figures printed per scenario."""
        notes = " ".join(f"{k}={v}" for k, v in self.notes.items())
        return (
            f"{self.scenario} [{self.database}+{self.broker}] produced={self.produced} delivered={self.delivered} "
            f"duplicates_delivered={self.duplicates_delivered} duplicates_absorbed={self.duplicates_absorbed} "
            f"lost={self.lost} order_violations={self.order_violations} effects_twice={self.effects_twice} "
            f"max_lag={self.max_lag:.2f}s broker_copies={self.broker_copies} faults={self.faults} "
            f"seconds={self.seconds:.1f}" + (f" {notes}" if notes else "") + (" OK" if self.ok else " FAILED")
        )

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready data."""
        doc = dataclasses.asdict(self)
        doc["ok"] = self.ok
        return doc


def read_broker(stage: Stage, expected: int, *, quiet: float = 3.0, timeout: float = 120.0) -> list[tuple]:
    """Read everything the broker holds for the stage, in broker order: (id, agg, seq, destination).

    Reads as the stage's checker group until ``expected`` distinct ids were seen
    and the broker then stays quiet for a moment, or nothing new comes for ``quiet`` seconds.
    """
    from ..routers import open_subscription

    subscription = open_subscription(stage.routed_url(), group=stage.checker_group, destinations=stage.destinations)
    out: list[tuple] = []
    ids: set[str] = set()
    last_new = time.monotonic()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            deliveries = subscription.receive(max_events=500, timeout=0.5)
            for delivery in deliveries:
                env = delivery.envelope
                if env is None:  # not a CloudEvent: no scenario writes one; it counts as nothing delivered
                    delivery.ack()
                    continue
                try:
                    data = json.loads(env.data) if env.datacontenttype == "application/json" else {}
                except ValueError:
                    data = {}
                out.append((env.id, str(data.get("agg", env.subject)), int(data.get("seq", -1)), delivery.destination))
                if env.id not in ids:
                    ids.add(env.id)
                    last_new = time.monotonic()
                delivery.ack()
            if not deliveries:
                if len(ids) >= expected or time.monotonic() - last_new > quiet:
                    break
    finally:
        subscription.close()
    return out


def first_order_violations(sequence: Iterable[tuple[str, int]]) -> tuple[int, dict[str, set[int]]]:
    """Count first deliveries that skip ahead of their aggregate's next sequence number.

    A repeat of a number already seen is a duplicate, not a violation; a number
    arriving after a later one was seen is.
    """
    seen: dict[str, set[int]] = collections.defaultdict(set)
    next_seq: dict[str, int] = collections.defaultdict(int)
    violations = 0
    for agg, seq in sequence:
        if seq in seen[agg]:
            continue
        seen[agg].add(seq)
        if seq != next_seq[agg]:
            violations += 1
        if seq >= next_seq[agg]:
            next_seq[agg] = seq + 1
    return violations, seen


def check(stage: Stage, figures: Figures, *, broker_entries: list[tuple] | None = None,
          extra_expected: dict[str, int] | None = None) -> Figures:
    """Fill ``figures`` from the writers' reports, the broker, the effects table and the delivery log."""
    produced = dict(stage.produced())
    for agg, count in (extra_expected or {}).items():
        produced[agg] = produced.get(agg, 0) + count
    expected = {(agg, seq) for agg, count in produced.items() for seq in range(count)}
    figures.produced = len(expected)
    counts = stage.counts()
    figures.notes.setdefault("outbox_rows", counts["total"])

    if broker_entries is None:
        broker_entries = read_broker(stage, len(expected))
    by_id = collections.Counter(entry[0] for entry in broker_entries)
    figures.broker_copies = sum(n - 1 for n in by_id.values())
    on_broker = {(agg, seq) for _, agg, seq, _ in broker_entries}
    figures.delivered = len(expected & on_broker)
    broker_violations, _ = first_order_violations(
        (agg, seq) for _, agg, seq, _ in broker_entries if (agg, seq) in expected
    )

    effects = stage.effects
    with stage.engine.connect() as conn:
        rows = conn.execute(select(effects.c.event_id, effects.c.agg, effects.c.seq).order_by(effects.c.n)).all()
    per_event = collections.Counter(row.event_id for row in rows)
    figures.effects_twice = sum(1 for n in per_event.values() if n > 1)
    handled = {(row.agg, row.seq) for row in rows}
    effect_violations, _ = first_order_violations((row.agg, row.seq) for row in rows if (row.agg, row.seq) in expected)

    figures.lost = len(expected - (on_broker & handled))
    figures.order_violations = broker_violations + effect_violations
    figures.notes.setdefault("broker_order_violations", broker_violations)
    figures.notes.setdefault("handled_order_violations", effect_violations)
    figures.notes.setdefault("not_on_broker", len(expected - on_broker))
    figures.notes.setdefault("not_handled", len(expected - handled))

    # A delivery is a duplicate when its id was delivered before. A process killed
    # after its commit never logged that earlier delivery, but the inbox's
    # "duplicate" outcome shows it happened.
    seen: set[str] = set()
    duplicates = absorbed = 0
    if stage.delivery_log.exists():
        for line in stage.delivery_log.read_text().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue  # a line cut short by SIGKILL
            duplicates += doc["id"] in seen or doc["outcome"] == "duplicate"
            absorbed += doc["outcome"] == "duplicate"
            seen.add(doc["id"])
    figures.duplicates_delivered = duplicates
    figures.duplicates_absorbed = absorbed
    figures.max_lag = stage.max_lag()
    return figures
