"""Fault scenarios that prove the outbox's guarantees against a real database and broker.

Each scenario writes sequenced events from several writer processes across
many aggregates (every event's data carries its aggregate's sequence number),
runs real ``strangler relay`` processes, injects one kind of fault (SIGKILL,
a broker outage, cut database connections, long transactions, poison rows, a
consumer killed mid-handler, a backlog), and then checks what the broker
really holds and what a consumer with an inbox really did:

* nothing lost: every committed event is on the broker and was handled;
* per-aggregate order kept: first deliveries of an aggregate's events come in
  sequence order, and so do the handler's effects;
* every duplicate delivery absorbed: no handler effect twice.

``tests/faults`` runs them; ``strangler verify`` runs them against a user's own
database and broker, in a private table and under a private destination prefix.
"""

from .check import Figures
from .scenarios import SCENARIOS, Budget, run_scenario
from .stage import Stage

__all__ = ["SCENARIOS", "Budget", "Figures", "Stage", "run_scenario"]
