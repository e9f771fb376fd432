"""The relay: claim ▸ publish ▸ mark, in order per aggregate, at least once, with any number of relays.

* No high-water mark. Every claim reads the unpublished rows of the relay's
  partitions in position order, so a row that commits after a later one is
  simply found by the next claim.
* One relay at a time owns a partition (``outbox.leases``); every write to a
  row is fenced by the partition's token, so a relay that lost its lease
  cannot mark rows.
* A row is marked published only after the router reports the broker's ack.
  A crash between publish and mark re-publishes the batch: at least once,
  and every event carries its ``id`` for de-duplication.
* Failures: a transient one (broker down) keeps every row as it is and backs
  the whole relay off with jitter until the broker returns. A permanent one
  (poison row, rejected by the broker, too large, a transform that raises)
  counts an attempt on that row, delays it with exponential backoff + jitter
  and holds back its key's later rows, and only that key's; after
  ``max_attempts`` the row is dead (``dead_at``, ``last_error`` kept) and
  its key flows again. ``outbox.maintenance.retry_dead`` brings it back.
* With a backlog, claiming the next batch overlaps publishing this one, and
  marking runs on a thread of its own: the caller's thread publishes, one
  worker claims (leaving out rows published and not yet marked), another marks.
* PostgreSQL: a trigger sends NOTIFY at the emitting commit, carrying small
  rows. The relay's thread waits on its LISTEN socket (``outbox.listener``)
  and, caught up, publishes the rows a notification carries itself, with no
  claim and no hand-over between threads; it marks them together every
  ``mark_interval`` rather than one per commit. Polling at ``poll_interval``
  stays as the fallback. Elsewhere polling adapts: 10 ms after work,
  doubling to ``poll_interval``.
* ``stop()`` (the CLI calls it on SIGTERM/SIGINT) lets the batch in flight
  finish publishing and be marked, then ``run`` returns.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import dataclasses
import datetime as dt
import json
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy import (
    BigInteger, DateTime, Text, all_, and_, any_, bindparam, cast, not_, or_, select, text, type_coerce, update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Engine

from . import tracing
from .envelope import Envelope
from .leases import Leases, new_owner_id
from .listener import Listener
from .metrics import NullMetrics
from .routers.base import HELD_BACK, PublishResult, Router
from .table import DEFAULT_TABLE_NAME, get_outbox_table
from .wakeup import Wakeup

log = logging.getLogger("strangler.relay")

EnvelopeTransform = Callable[[Envelope], Envelope]

_CLAIM_COLUMNS = (
    "position", "id", "aggregatetype", "aggregateid", "type", "payload", "timestamp",
    "tracingspancontext", "source", "content_type", "lease_partition", "attempts",
)
#: Most keys named in the claim's exclusion list; beyond it they are filtered after the read.
_MAX_EXCLUDED_KEYS = 200
#: Batches published and being marked at most; beyond, publishing waits for the oldest mark.
_MAX_MARKS_IN_FLIGHT = 2
#: Seconds a key stays held back after its head row is due again (monotonic and wall clock slack).
_HOLD_MARGIN = 0.25
#: Published positions remembered to skip notifications of rows a claim already sent.
_RECENT = 8192
#: Notified rows held at most; beyond, they are dropped and the relay claims instead.
_MAX_NOTIFIED = 10_000


@dataclasses.dataclass
class RelayOptions:
    """How one relay claims, publishes, retries and waits."""

    batch: int = 200
    max_attempts: int = 10
    poll_interval: float = 0.5
    lease_seconds: float = 15.0
    #: Backoff of a row after a permanent failure: retry_base * 2^(attempts-1), capped, with jitter.
    retry_base: float = 1.0
    retry_max: float = 300.0
    #: Longest pause of the whole relay while the broker is unreachable.
    outage_max: float = 30.0
    table_name: str = DEFAULT_TABLE_NAME
    #: Use PostgreSQL LISTEN/NOTIFY where available.
    notify: bool = True
    #: Claim the next batch while this one publishes.
    overlap: bool = True
    #: After a NOTIFY wake-up, wait this long (seconds) so that commits close together share a batch.
    coalesce: float = 0.0
    #: While caught up with NOTIFY, rows published straight from notifications are marked at most
    #: this often (seconds), gathered into one statement, instead of one statement per commit.
    #: Marks are not on the path to the broker; at 1,000 commits/s they were, in CPU, the relay's
    #: largest cost besides publishing. A crash re-publishes at most this long of events. 0: each at once.
    mark_interval: float = 0.01
    #: Python's thread switch interval while ``run`` runs (seconds; None leaves it). The claim and
    #: mark threads wait on the database and then for the interpreter lock, which the publishing
    #: thread holds up to the interval (5 ms by default): a shorter one hands it over sooner.
    switch_interval: float | None = 0.0005

    def __post_init__(self):
        if self.batch < 1:
            raise ValueError(f"relay batch = {self.batch}: expected at least 1")
        if self.max_attempts < 1:
            raise ValueError(f"relay max_attempts = {self.max_attempts}: expected at least 1")
        if self.lease_seconds <= 0 or self.poll_interval <= 0:
            raise ValueError("relay lease_seconds and poll_interval must be positive")
        if not 0 <= self.mark_interval <= self.lease_seconds / 3:
            raise ValueError(
                f"relay mark_interval = {self.mark_interval}: expected 0 to a third of lease_seconds"
            )


@dataclasses.dataclass
class RelayStats:
    """Totals of one ``run``."""

    batches: int = 0
    published: int = 0
    failed: int = 0
    dead: int = 0
    lost_marks: int = 0
    #: Why the first failed publish failed (e.g. the broker unreachable): a once-run's summary names it.
    first_error: str | None = None
    #: The first database error (a claim, a lease refresh or a mark that failed): a once-run that met
    #: one stopped early or left rows to publish again, and must not report success.
    database_error: str | None = None


@dataclasses.dataclass(slots=True)
class _Row:
    position: int
    key: tuple[str, str]
    partition: int
    attempts: int
    type: str
    envelope: Envelope | None
    error: str | None = None  # set when the row cannot become an envelope
    retry_at: dt.datetime | None = None  # set when the row failed: when it is due again


@dataclasses.dataclass
class _Batch:
    rows: list[_Row]
    fences: dict[int, int]
    claimed_at: float


def network_timeouts(url) -> dict[str, object]:
    """``connect_args`` that keep a relay's database connection from hanging for ever on a broken network.

    A packet-dropping network (a host gone, a firewall forgetting the flow) raises
    nothing: a claim or mark would wait while this relay's leases expire and
    another takes its partitions, and SIGTERM would wait with it. PostgreSQL
    (libpq): a connect timeout, TCP keepalives and a TCP user timeout, so an
    unanswered connection fails within about 30 s. MariaDB/MySQL (PyMySQL): a
    connect timeout and read/write timeouts above InnoDB's 50 s lock wait. A
    parameter the URL sets already wins; other databases get none.
    """
    from sqlalchemy.engine import make_url

    url = make_url(url)
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend == "postgresql" and driver in ("psycopg", "psycopg2"):
        wanted = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                  "keepalives_count": 3, "tcp_user_timeout": 30000}
    elif backend in ("mysql", "mariadb") and driver == "pymysql":
        wanted = {"connect_timeout": 10, "read_timeout": 120, "write_timeout": 120}
    else:
        return {}
    return {key: value for key, value in wanted.items() if key not in url.query}


def _int_array(name: str):
    """A PostgreSQL ``bigint[]`` parameter, bound as its text form (``_int_array_text``).

    One parameter instead of hundreds, and the text costs a fifth of the
    driver's dumping of a list of ints. The cast sits in a scalar subquery so
    PostgreSQL parses the array once per statement: a bare text-to-array cast is
    only *stable*, and a filter would parse it again for every row it reads.
    """
    # The outer cast makes it one array value; a bare ALL (SELECT …) would compare with the subquery's rows.
    return cast(select(cast(bindparam(name, type_=Text()), ARRAY(BigInteger()))).scalar_subquery(), ARRAY(BigInteger()))


def _int_array_text(values: Sequence[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


def _fetch_binary(conn) -> None:
    """Have psycopg fetch this connection's results in PostgreSQL's binary format.

    In the default text format a ``bytea`` arrives as hex, twice its size, and is
    decoded back: for a sealed event's 1.4 KB JWE, 6.5 µs more per row of a claim
    than in binary, where the bytes come as they are. The Python values are the
    same either way. Only the claim connection, which is never pooled, does this.
    """
    try:
        import psycopg
    except ImportError:  # another driver (psycopg2): text results, as before
        return

    class BinaryCursor(psycopg.Cursor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.format = psycopg.pq.Format.BINARY

    driver = conn.connection.driver_connection
    if isinstance(driver, psycopg.Connection):
        driver.cursor_factory = BinaryCursor


def _discard(conn) -> None:
    """Close a claim or mark connection for good: its session settings never reach the pool."""
    if conn is None:
        return
    try:
        conn.invalidate()
        conn.close()
    except Exception:  # already broken; the pool discards it
        pass


def _merged(parts: Sequence[tuple[_Batch, dict[int, PublishResult]]]) -> tuple[_Batch, dict[int, PublishResult]]:
    """One batch and its results out of several published under the same fences, in publish order."""
    if len(parts) == 1:
        return parts[0]
    rows = [row for batch, _ in parts for row in batch.rows]
    results = {position: result for _, part in parts for position, result in part.items()}
    return _Batch(rows, parts[0][0].fences, parts[0][0].claimed_at), results


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Relay:
    """Moves events from one outbox table to one router; see the module docstring for the guarantees."""

    def __init__(
        self,
        engine: Engine,
        router: Router,
        *,
        options: RelayOptions | None = None,
        envelope_transform: EnvelopeTransform | None = None,
        metrics: NullMetrics | None = None,
        owner: str | None = None,
    ):
        self.engine = engine
        self.router = router
        self.options = options or RelayOptions()
        self.envelope_transform = envelope_transform
        self.metrics = metrics or NullMetrics()
        self.owner = owner or new_owner_id()
        self.table = get_outbox_table(self.options.table_name)
        self.leases = Leases(self.options.table_name, self.owner, self.options.lease_seconds)
        self.stats = RelayStats()
        #: Keys whose head row awaits a retry → when it may be tried again (monotonic seconds).
        self.blocked: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._wake = Wakeup()
        self._next_refresh = 0.0
        self._last_turn = time.monotonic()
        self._db_ok = False
        self._db_ok_at = 0.0  # monotonic time of the last database round trip that worked
        self._broker_ok = True  # False while backing off from a broker outage
        #: The LISTEN connection (PostgreSQL with ``notify``), read by the thread that runs ``run``.
        self._listener: Listener | None = None
        self._listen_retry_at = 0.0
        #: Rows carried by notifications, not yet published.
        self._notified: list[list] = []
        #: A notification without rows (too many or too large), or notifications missed: claim.
        self._claim_needed = False
        #: Positions published lately, so a notification for a row a claim already sent is skipped.
        self._recent: collections.deque[int] = collections.deque(maxlen=_RECENT)
        self._recent_set: set[int] = set()
        self._random = random.Random()
        #: The claim worker's connection (PostgreSQL, MariaDB), opened on the first claim.
        self._claim_conn = None
        #: The mark worker's connection (PostgreSQL), opened on the first mark.
        self._mark_conn = None
        self._pg = engine.dialect.name == "postgresql"
        #: Statements built once: the claim's shapes, and the mark's.
        self._statements: dict = {}
        #: The partitions notified rows may come from and their fences, as of the last refresh.
        self._notify_scope: tuple[frozenset[int], dict[int, int]] = (frozenset(), {})

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run`` to finish the batch in flight, mark it and return (signal-safe)."""
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Claim now instead of at the next poll."""
        self._wake.set()

    @property
    def _listening(self) -> bool:
        return self._listener is not None and self._listener.listening

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called."""
        return self._stop.is_set()

    def healthy(self, stall_seconds: float = 60.0) -> bool:
        """True when the loop turned within ``stall_seconds`` (for /healthz)."""
        return time.monotonic() - self._last_turn < max(stall_seconds, 4 * self.options.outage_max)

    def ready(self) -> bool:
        """True when the relay can do its work (for /readyz).

        The last database round trip worked, and one did within ``lease_seconds``
        (a round trip that hangs, behind a network that drops packets, raises
        nothing: by then this relay's leases have expired too); the relay holds
        partitions; and the broker is not in an outage it is backing off from.
        """
        fresh = time.monotonic() - self._db_ok_at < self.options.lease_seconds
        return self._db_ok and fresh and self._broker_ok and bool(self.leases.state.held)

    def _database_answered(self) -> None:
        self._db_ok = True
        self._db_ok_at = time.monotonic()

    # -- the loop ---------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> RelayStats:
        """Relay until ``stop()``; with ``once``, until nothing is left to claim. Return the totals.

        A ``stop()`` that came before ``run`` makes it return at once, having claimed nothing.
        """
        self.stats = RelayStats()
        if self._stop.is_set():
            self._stop.clear()  # taken: the next run relays
            return self.stats
        # Claims and marks each have a worker thread and a connection of their own, so a claim never
        # queues behind a mark's commit; rows published but not yet marked are left out of claims.
        claims = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="strangler-relay-claim")
        markers = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="strangler-relay-mark")
        marks: collections.deque[tuple[concurrent.futures.Future, list[int]]] = collections.deque()
        unmarked: set[int] = set()
        prefetch: concurrent.futures.Future | None = None
        idle = 0.01
        outage = 0
        #: True when the last claim read every claimable row: rows from now on arrive by notification.
        caught_up = False
        interval = sys.getswitchinterval()
        if self.options.switch_interval is not None:
            sys.setswitchinterval(self.options.switch_interval)

        #: Rows published from notifications and not yet handed to the mark worker (mark_interval).
        gathered: list[tuple[_Batch, dict[int, PublishResult]]] = []
        gathered_until = 0.0

        def mark_gathered() -> None:
            if gathered:
                batch, results = _merged(gathered)
                gathered.clear()
                marks.append((markers.submit(self._mark, batch, results), [row.position for row in batch.rows]))

        def reap(wait: bool = False, keep: int = 0) -> None:
            if wait:
                mark_gathered()
            while len(marks) > keep and (wait or marks[0][0].done()):
                future, positions = marks.popleft()
                try:
                    future.result()
                except Exception as exc:  # the rows stay unpublished and are published again
                    self._database_failed(exc)
                    log.error("could not mark a batch: %s", exc, extra={"relay": {"event": "mark_failed"}})
                unmarked.difference_update(positions)

        def claim(extra: tuple[int, ...] = ()) -> concurrent.futures.Future:
            self._wake.clear()  # a notification from now on wakes the next idle wait
            self._drop_notified()  # the claim reads every row they carried
            return claims.submit(self._claim, tuple(unmarked) + extra)

        try:
            claims.submit(self._start).result()
            if not once:
                self._listener = self._new_listener()
            while not self._stop.is_set():
                self._last_turn = time.monotonic()
                if self._listener is not None and not self._listener.listening and (
                    self._last_turn >= self._listen_retry_at
                ):
                    self._listen()
                reap()
                if time.monotonic() >= self._next_refresh:
                    if prefetch is not None:  # a claim made before the refresh may hold released partitions
                        self._result(prefetch)
                        prefetch = None
                    reap(wait=True)
                    caught_up = False  # partitions may have been taken: their rows are unseen
                    if not self._call(claims, self._refresh):
                        if once:
                            break
                        self._pause(self._outage_delay(outage := outage + 1))
                        continue
                batch, notified = None, False
                if prefetch is None and caught_up and not once and self._listening:
                    # Caught up with NOTIFY on: publish the rows the notifications carried, no claim.
                    batch = self._notified_batch(unmarked)
                    if batch is not None and not batch.rows:
                        self._report_gauges(None)
                        if gathered and time.monotonic() >= gathered_until:
                            mark_gathered()
                        if gathered:  # wake up to mark them, or sooner for a notification
                            self._wait_for_notification(max(0.0, gathered_until - time.monotonic()))
                            continue
                        if not self._wait_for_notification():
                            batch = None  # the poll interval passed: claim (the fallback)
                        else:
                            continue
                    notified = batch is not None
                if batch is None:
                    if prefetch is None:
                        prefetch = claim()
                    batch, prefetch = self._result(prefetch), None
                    if batch is None:  # database unreachable
                        caught_up = False
                        reap(wait=True)
                        if once:
                            break
                        self._pause(self._outage_delay(outage := outage + 1))
                        continue
                    caught_up = len(batch.rows) < self.options.batch
                claimed = len(batch.rows)
                batch.rows = [row for row in batch.rows if not self._is_blocked(row.key)]
                if not batch.rows:
                    self._report_gauges(None)
                    if not once and self._listening:
                        continue  # the next turn waits for a notification
                    if once:
                        if not marks:
                            break
                        reap(wait=True)
                        continue
                    self._idle(idle)
                    idle = min(idle * 2, self.options.poll_interval)
                    continue
                idle = 0.01
                positions = [row.position for row in batch.rows]
                if self.options.overlap and claimed >= self.options.batch:
                    prefetch = claim(tuple(positions))  # a backlog: claim the next batch while this one publishes
                results, transient = self._publish(batch)
                unmarked.update(positions)
                self._remember_published(positions)
                if notified and self.options.mark_interval > 0 and not transient and all(
                    result.ok for result in results.values()
                ):
                    if gathered and gathered[0][0].fences != batch.fences:
                        mark_gathered()  # one statement is fenced by one set of leases
                    if not gathered:
                        gathered_until = time.monotonic() + self.options.mark_interval
                    gathered.append((batch, results))
                    if sum(len(b.rows) for b, _ in gathered) >= self.options.batch:
                        mark_gathered()
                else:
                    mark_gathered()  # marks stay in publish order
                    marks.append((markers.submit(self._mark, batch, results), positions))
                if len(marks) > _MAX_MARKS_IN_FLIGHT:
                    # Marks slower than publishing: wait for the oldest rather than let the rows
                    # published and not yet marked (which every claim must skip) pile up.
                    reap(wait=True, keep=_MAX_MARKS_IN_FLIGHT)
                if gathered and time.monotonic() >= gathered_until:
                    mark_gathered()  # after the publish: a due mark never delays a notified row
                self._report_gauges(batch)
                if any(not result.ok for result in results.values()):
                    caught_up = False  # a key may hold rows back: only a claim knows which
                if transient:
                    if prefetch is not None:
                        self._result(prefetch)
                        prefetch = None
                    reap(wait=True)
                    if once:
                        break
                    outage += 1
                    self._broker_ok = False
                    delay = self._outage_delay(outage)
                    log.warning(
                        "broker unavailable, backing off",
                        extra={"relay": {"event": "backoff", "seconds": round(delay, 3), "error": transient}},
                    )
                    self._pause(delay)
                else:
                    outage = 0
                    self._broker_ok = True
            if prefetch is not None:
                self._result(prefetch)
            reap(wait=True)
        finally:
            sys.setswitchinterval(interval)
            self._stop.set()
            markers.submit(self._close_mark_connection)
            markers.shutdown(wait=True)
            try:
                claims.submit(self._shutdown).result(timeout=30)
            except Exception as exc:  # the leases expire on their own
                log.warning("could not release leases: %s", exc, extra={"relay": {"event": "release_failed"}})
            claims.shutdown(wait=True)
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            self._stop.clear()  # the next run relays
        return self.stats

    def drain(self) -> RelayStats:
        """Publish everything claimable now and return (``run(once=True)``)."""
        return self.run(once=True)

    # -- steps run on the database worker ----------------------------------------------------

    def _start(self) -> None:
        self.leases.ensure_tables(self.engine)
        self._refresh()

    def _refresh(self) -> None:
        now = _now()
        held_before = set(self.leases.state.held)
        with self.engine.begin() as conn:
            taken = self.leases.refresh(conn, now)
            if taken:
                self._load_blocked(conn, taken, now)
        state = self.leases.state
        lost = held_before - set(state.held)
        if lost:
            # Handed to a relay short of its share, or expired while this one could not renew them.
            log.info(
                "gave up partitions",
                extra={"relay": {"event": "lease", "lost": len(lost), "held": len(state.held),
                                 "relays": state.live_relays}},
            )
        claimable = state.claimable()
        # Read on every notified batch, changed only here: built once per refresh.
        self._notify_scope = (frozenset(claimable), {p: state.held[p] for p in claimable})
        self._database_answered()
        # Renew at a third of the lease; while short of a fair share, look again soon.
        share_short = len(state.held) < -(-64 // state.live_relays)
        interval = self.options.lease_seconds / 3
        if share_short:
            interval = min(interval, max(self.options.poll_interval, 0.2))
        self._next_refresh = time.monotonic() + interval
        if taken:
            log.info(
                "took partitions",
                extra={"relay": {"event": "lease", "taken": len(taken), "held": len(state.held),
                                 "relays": state.live_relays}},
            )

    def _load_blocked(self, conn, partitions: list[int], now: dt.datetime) -> None:
        t = self.table
        rows = conn.execute(
            select(t.c.aggregatetype, t.c.aggregateid, t.c.available_at).where(
                t.c.published_at.is_(None), t.c.dead_at.is_(None), t.c.lease_partition.in_(partitions),
                t.c.available_at > now,
            )
        ).all()
        mono = time.monotonic()
        for aggregatetype, aggregateid, available_at in rows:
            until = mono + (available_at - now).total_seconds() + _HOLD_MARGIN
            key = (aggregatetype, aggregateid)
            self.blocked[key] = max(self.blocked.get(key, 0.0), until)

    def _claim(self, exclude: Sequence[int]) -> _Batch:
        state = self.leases.state
        partitions = state.claimable()
        fences = {p: state.held[p] for p in partitions}
        if not partitions:
            return _Batch([], fences, time.monotonic())
        blocked = [key for key, until in self.blocked.items() if until > time.monotonic()]
        if len(blocked) > _MAX_EXCLUDED_KEYS:
            blocked = []  # filtered after the read instead
        subset = len(partitions) < 64
        query = self._claim_statement(subset, bool(exclude), blocked)
        params: dict = {"now": _now()}
        if subset:
            params["partitions"] = partitions
        if exclude:
            params["exclude"] = _int_array_text(exclude) if self._pg else list(exclude)
        result = self._claim_read(query, params)
        self._database_answered()
        rows = []
        for (position, id_, aggregatetype, aggregateid, type_, payload, timestamp, span, source,
             content_type, partition, attempts) in result:
            try:
                envelope, error = Envelope.from_columns(id_, source, type_, aggregatetype, aggregateid,
                                                        timestamp.replace(tzinfo=dt.UTC), payload, content_type,
                                                        span), None
            except Exception as exc:  # a row that cannot be an event is poison
                envelope, error = None, f"row cannot be read as a CloudEvent: {exc}"
            rows.append(_Row(position, (aggregatetype, aggregateid), partition, attempts, type_, envelope, error))
        return _Batch(rows, fences, time.monotonic())

    def _claim_statement(self, subset: bool, exclude: bool, blocked: list[tuple[str, str]]):
        """The claim's SELECT, built once per shape (blocked keys are rare and built each time).

        Building and caching a statement costs more than a small claim's rows:
        with NOTIFY a relay claims on every commit, so the shapes are kept.
        """
        shape = (subset, exclude)
        query = None if blocked else self._statements.get(shape)
        if query is not None:
            return query
        t = self.table
        # The timestamp is read as the plain (naive, UTC) DateTime and made aware in _claim: the
        # column's TypeDecorator costs more per row than the rest of the row's decoding.
        columns = [type_coerce(t.c[n], DateTime()).label(n) if n == "timestamp" else t.c[n] for n in _CLAIM_COLUMNS]
        query = select(*columns).where(
            t.c.published_at.is_(None),
            t.c.dead_at.is_(None),
            or_(t.c.available_at.is_(None), t.c.available_at <= bindparam("now", type_=t.c.available_at.type)),
        )
        if subset:
            query = query.where(t.c.lease_partition.in_(bindparam("partitions", expanding=True)))
        if exclude:
            if self._pg:
                query = query.where(t.c.position != all_(_int_array("exclude")))
            else:
                query = query.where(t.c.position.not_in(bindparam("exclude", expanding=True)))
        if blocked:
            query = query.where(
                not_(or_(*(and_(t.c.aggregatetype == a, t.c.aggregateid == b) for a, b in blocked)))
            )
        # (published_at, position) is ix_<t>_claim's order: the planner walks that index with
        # published_at IS NULL as its condition, never the primary key past published rows.
        query = query.order_by(t.c.published_at, t.c.position).limit(self.options.batch)
        if not blocked:
            self._statements[shape] = query
        return query

    def _claim_read(self, query, params: dict) -> list:
        """Run the claim's SELECT; on PostgreSQL and MariaDB on a connection kept for claims.

        That connection is in autocommit: a claim is one round trip, not BEGIN ▸
        SELECT ▸ ROLLBACK with a pool check-out around it. SQLite claims on a
        connection of its own each time (its pools may share one connection).

        On PostgreSQL that connection plans without sorts (``enable_sort = off``):
        the claim's order is ``ix_<t>_claim``'s, so its plan is that index read in
        order up to the batch size, whatever the statistics say. On an outbox never
        analyzed (new, or truncated; a backfill lands in one) the planner guessed
        a handful of pending rows and read all of them for every claim, then
        sorted them: a claim cost the whole backlog, 10–17 ms at 5,000 rows.
        """
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                return conn.execute(query, params).all()
        if self._claim_conn is None:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if self._pg:
                conn.exec_driver_sql("SET enable_sort = off")  # the connection is discarded, not pooled
                _fetch_binary(conn)
            self._claim_conn = conn
        try:
            return self._claim_conn.execute(query, params).all()
        except Exception:
            self._close_claim_connection()  # a new one next time
            raise

    def _close_claim_connection(self) -> None:
        conn, self._claim_conn = self._claim_conn, None
        _discard(conn)

    def _mark(self, batch: _Batch, results: dict[int, PublishResult]) -> None:
        """Write the outcome of a published batch: published rows, failed rows, dead rows."""
        t = self.table
        ok = [row.position for row in batch.rows if row.position in results and results[row.position].ok]
        failed = [
            row for row in batch.rows
            if row.position in results and not results[row.position].ok and results[row.position].permanent
        ]
        now = _now()
        if self._pg and not failed:
            self._mark_published_pg(batch, ok, now)
            return
        lost = 0
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # A mark lost in a database crash only re-publishes (at least once), never loses
                # an event: no need to wait for the WAL flush.
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            held = self.leases.still_held(conn, batch.fences)
            if len(held) < len(batch.fences):
                partition_of = {row.position: row.partition for row in batch.rows}
                lost += sum(1 for p in ok if partition_of[p] not in held)
                lost += sum(1 for row in failed if row.partition not in held)
                ok = [p for p in ok if partition_of[p] in held]
                failed = [row for row in failed if row.partition in held]
            if ok:
                conn.execute(self._mark_statement(), {"now": now, "positions": _int_array_text(ok) if self._pg else ok})
            for row in failed:
                attempts = row.attempts + 1
                error = (results[row.position].error or "failed")[:4000]
                values: dict = {"attempts": attempts, "last_error": error}
                if attempts >= self.options.max_attempts:
                    values["dead_at"] = now
                    self.stats.dead += 1
                    self.metrics.dead(row.type)
                else:
                    values["available_at"] = row.retry_at or now + dt.timedelta(seconds=self._retry_delay(attempts))
                conn.execute(update(t).where(t.c.position == row.position, t.c.published_at.is_(None)).values(**values))
        self._marked(lost)

    def _marked(self, lost: int) -> None:
        self._database_answered()
        if lost:
            self.stats.lost_marks += lost
            self._next_refresh = 0.0  # our lease moved on: look at what we still hold
            log.warning(
                "rows not marked: their partition is no longer ours; the new owner publishes them again",
                extra={"relay": {"event": "fenced", "rows": lost}},
            )

    def _mark_published_pg(self, batch: _Batch, ok: list[int], now: dt.datetime) -> None:
        """Mark ``ok`` published in one statement, fenced, on the mark worker's own connection.

        The common case of every mark (no failed rows) on PostgreSQL: one round
        trip instead of BEGIN ▸ SET ▸ lock the leases ▸ UPDATE ▸ COMMIT. The
        statement locks this relay's lease rows ``FOR SHARE`` for its own
        transaction and updates only rows of partitions still held under the
        claim's fence, so the guarantee is the transaction path's.
        """
        if not ok:
            return
        partitions = sorted({row.partition for row in batch.rows})
        params = {
            "positions": _int_array_text(ok),
            "partitions": _int_array_text(partitions),
            "fences": _int_array_text([batch.fences.get(p, -1) for p in partitions]),
            "owner": self.owner[:128],
            "now": now.astimezone(dt.UTC).replace(tzinfo=None),
        }
        if self._mark_conn is None:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            # A mark lost in a database crash only re-publishes (at least once), never loses an
            # event: no need to wait for the WAL flush. The connection is discarded, not pooled.
            conn.exec_driver_sql("SET synchronous_commit = off")
            self._mark_conn = conn
        try:
            marked = self._mark_conn.execute(self._pg_mark_statement(), params).all()
        except Exception:
            self._close_mark_connection()
            raise
        self._marked(len(ok) - len(marked))

    def _pg_mark_statement(self):
        """The fenced mark: rows found by primary key, kept only if their partition is still held.

        The held partitions are one array, computed once (an InitPlan) and compared
        as a filter. Written as a join (``lease_partition IN (SELECT …)``), the
        planner may run it as a nested loop that scans the claim index once per
        lease row and per position (64 × 200 descents); with no statistics yet on
        the small lease table, it did, and a drain's marks took 3.5× as long.
        ``published_at IS NULL`` is a filter too: on an outbox never analyzed (new,
        or truncated) the planner read every pending row through the claim index
        on that condition for each mark, and a 5,000-row backlog drained at a third
        of its rate.
        """
        query = self._statements.get("mark-pg")
        if query is None:
            leases = self.leases.table
            quote = self.engine.dialect.identifier_preparer.quote
            query = text(
                f"UPDATE {quote(self.table.name)} SET published_at = :now, published_by = :owner "
                f"WHERE position = ANY(CAST((SELECT CAST(:positions AS TEXT)) AS BIGINT[])) "
                # The casts keep published_at and lease_partition out of any index condition: filters
                # on the rows the primary key finds, never a scan of every pending row, never a join key.
                f"AND CAST(published_at AS TEXT) IS NULL "
                f"AND CAST(lease_partition AS INTEGER) = ANY(ARRAY("
                f"SELECT lease_partition FROM {quote(leases.name)} "
                f"WHERE owner = :owner AND (lease_partition, fence) IN ("
                f"SELECT * FROM unnest(CAST(:partitions AS SMALLINT[]), CAST(:fences AS BIGINT[]))) "
                f"FOR SHARE)) "
                f"RETURNING position"
            )
            self._statements["mark-pg"] = query
        return query

    def _close_mark_connection(self) -> None:
        conn, self._mark_conn = self._mark_conn, None
        _discard(conn)

    def _mark_statement(self):
        """``UPDATE … SET published_at WHERE position IN (…) AND published_at IS NULL``, built once."""
        query = self._statements.get("mark")
        if query is None:
            t = self.table
            if self._pg:
                published = t.c.position == any_(_int_array("positions"))
            else:
                published = t.c.position.in_(bindparam("positions", expanding=True))
            query = (
                update(t)
                .where(published, t.c.published_at.is_(None))
                .values(published_at=bindparam("now", type_=t.c.published_at.type), published_by=self.owner[:128])
            )
            self._statements["mark"] = query
        return query

    def _shutdown(self) -> None:
        self._close_claim_connection()
        if not self._db_ok_at:
            return  # never reached the database: nothing taken, nothing to hand back
        with self.engine.begin() as conn:
            self.leases.release_all(conn)

    # -- publishing (caller's thread) --------------------------------------------------------

    def _publish(self, batch: _Batch) -> tuple[dict[int, PublishResult], str | None]:
        """Publish a batch; return results by position and the first transient error, if any."""
        results: dict[int, PublishResult] = {}
        sendable: list[_Row] = []
        envelopes: list[Envelope] = []
        held_back: set[tuple[str, str]] = set()
        for row in batch.rows:
            if row.key in held_back:
                continue  # an earlier row of this key failed before publishing: keep order
            envelope, error = row.envelope, row.error
            if envelope is not None and self.envelope_transform is not None:
                try:
                    envelope = self.envelope_transform(envelope)
                except Exception as exc:
                    error = f"envelope transform failed: {type(exc).__name__}: {exc}"
            if error is not None:
                results[row.position] = PublishResult(row.envelope.id if row.envelope else str(row.position),
                                                      error, True)
                held_back.add(row.key)
                continue
            sendable.append(row)
            envelopes.append(envelope)
        started = time.perf_counter()
        transient: str | None = None
        if envelopes:
            try:
                with tracing.send_span(envelopes, router=self.router):
                    published = self.router.publish(envelopes)
                if len(published) != len(envelopes):
                    raise RuntimeError(f"router returned {len(published)} results for {len(envelopes)} events")
            except Exception as exc:  # a router that raises is treated as a broker outage
                published = [PublishResult(e.id, f"{type(exc).__name__}: {exc}", False) for e in envelopes]
            for row, result in zip(sendable, published):
                results[row.position] = result
        elapsed = time.perf_counter() - started
        self.metrics.batch_latency(elapsed)

        types: collections.Counter[str] = collections.Counter()
        lags = []
        now = _now()
        failed = dead = 0
        first_failure: tuple[_Row, str, float | None] | None = None  # the row, why, seconds to its retry
        mono = time.monotonic()
        failed_keys: set[tuple[str, str]] = set()
        for row in batch.rows:
            result = results.get(row.position)
            if result is None:
                continue
            if not result.ok and result.error == HELD_BACK and row.key in failed_keys:
                del results[row.position]  # not sent: stays pending behind its key's failed row
                continue
            if result.ok:
                types[row.type] += 1
                if row.envelope is not None:
                    lags.append((now - row.envelope.time).total_seconds())
                continue
            failed += 1
            self.stats.first_error = self.stats.first_error or result.error
            if result.permanent:
                failed_keys.add(row.key)
                self.metrics.failed(row.type, "permanent")
                if row.attempts + 1 >= self.options.max_attempts:
                    dead += 1
                    self.blocked.pop(row.key, None)
                    first_failure = first_failure or (row, result.error or "failed", None)
                else:
                    # One delay for both: the row's available_at (written by the mark) and its key's
                    # hold here, which lasts a moment longer, so that no claim finds the key's later
                    # rows free while the head row is not yet due.
                    delay = self._retry_delay(row.attempts + 1)
                    row.retry_at = now + dt.timedelta(seconds=delay)
                    self.blocked[row.key] = mono + delay + _HOLD_MARGIN
                    first_failure = first_failure or (row, result.error or "failed", delay)
            else:
                self.metrics.failed(row.type, "transient")
                transient = transient or result.error
        self.metrics.published(types)
        self.metrics.lag(lags)
        published_count = sum(types.values())
        self.stats.batches += 1
        self.stats.published += published_count
        self.stats.failed += failed
        log.info(
            "batch",
            extra={"relay": {
                "event": "batch", "claimed": len(batch.rows), "published": published_count, "failed": failed,
                "dead": dead, "transient": transient is not None, "publish_ms": round(elapsed * 1000, 2),
                "blocked_keys": self._blocked_count(),
            }},
        )
        if first_failure is not None:
            self._log_failures(first_failure, failed, dead)
        return results, transient

    def _log_failures(self, first: tuple[_Row, str, float | None], failed: int, dead: int) -> None:
        """One warning per batch with permanent failures: why the first failed, and what happens to it.

        The reason is in the row's ``last_error`` too, but an operator reads
        the log: without it a row retried for an hour (a missing key, a payload
        the broker refuses) showed only as a count.
        """
        row, error, retry_in = first
        event_id = row.envelope.id if row.envelope is not None else f"row #{row.position}"
        fate = (f"dead after {row.attempts + 1} attempts: 'strangler outbox retry' once fixed" if retry_in is None
                else f"attempt {row.attempts + 1} of {self.options.max_attempts}, again in {retry_in:.3g}s")
        log.warning(
            "%d event(s) failed to publish; the first, %s (%s, %s/%s): %s (%s)",
            failed, event_id, row.type, row.key[0], row.key[1], error[:500], fate,
            extra={"relay": {"event": "publish_failed", "failed": failed, "dead": dead, "id": event_id,
                             "type": row.type, "attempts": row.attempts + 1, "error": error[:500],
                             "retry_in": None if retry_in is None else round(retry_in, 1)}},
        )

    # -- helpers -----------------------------------------------------------------------------

    def _is_blocked(self, key: tuple[str, str]) -> bool:
        until = self.blocked.get(key)
        if until is None:
            return False
        if until <= time.monotonic():
            del self.blocked[key]
            return False
        return True

    def _blocked_count(self) -> int:
        mono = time.monotonic()
        return sum(1 for until in self.blocked.values() if until > mono)

    def _retry_delay(self, attempts: int) -> float:
        base = min(self.options.retry_max, self.options.retry_base * 2 ** max(0, attempts - 1))
        return base * (0.5 + self._random.random() / 2)

    def _outage_delay(self, outages: int) -> float:
        base = min(self.options.outage_max, 0.1 * 2 ** max(0, outages - 1))
        return base * (0.5 + self._random.random() / 2)

    def _report_gauges(self, batch: _Batch | None) -> None:
        oldest = 0.0
        if batch is not None and batch.rows and batch.rows[0].envelope is not None:
            oldest = max(0.0, (_now() - batch.rows[0].envelope.time).total_seconds())
        self.metrics.pending(oldest, self._blocked_count(), len(self.leases.state.held))

    def _call(self, db, fn, *args):
        """Run ``fn`` on the database worker; None (logged) when the database is unreachable."""
        try:
            result = db.submit(fn, *args).result()
        except Exception as exc:
            self._database_failed(exc)
            log.error("database error: %s", exc, extra={"relay": {"event": "db_error", "step": fn.__name__}})
            return None
        return True if result is None else result

    def _database_failed(self, exc: Exception) -> None:
        self._db_ok = False
        self.stats.database_error = self.stats.database_error or f"{type(exc).__name__}: {exc}"

    def _result(self, future):
        try:
            return future.result()
        except Exception as exc:
            self._database_failed(exc)
            log.error("database error: %s", exc, extra={"relay": {"event": "db_error", "step": "claim"}})
            return None

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _idle(self, seconds: float) -> None:
        if self._wake.wait(seconds) and self.options.coalesce > 0:
            # Woken by a commit: let commits arriving within the next moment join this claim,
            # so a steady stream of small transactions costs one claim per few of them.
            self._stop.wait(self.options.coalesce)

    # -- PostgreSQL LISTEN/NOTIFY ---------------------------------------------------------------

    def _wait_for_notification(self, seconds: float | None = None) -> bool:
        """Wait for a notification up to ``seconds`` (``poll_interval``); True if one came (or ``stop()``).

        Waits on the LISTEN socket itself: what arrived is read by ``_notified_batch``.
        """
        listener = self._listener
        watched = listener.fileno() if listener is not None and listener.listening else None
        if not self._wake.wait(self.options.poll_interval if seconds is None else seconds, also=watched):
            return False
        if self.options.coalesce > 0:
            # Let notifications arriving within the next moment join this batch.
            self._stop.wait(self.options.coalesce)
        return True

    def _drop_notified(self) -> None:
        self._read_notifications()  # what waits in the socket is of rows the claim reads too
        self._notified = []
        self._claim_needed = False

    def _remember_published(self, positions: list[int]) -> None:
        recent, members = self._recent, self._recent_set
        for position in positions:
            if len(recent) == recent.maxlen:
                members.discard(recent[0])
            recent.append(position)
            members.add(position)

    def _notified_batch(self, unmarked: set[int]) -> _Batch | None:
        """The rows notifications carried since the last turn, as a batch; None when a claim is needed.

        Only rows of partitions this relay may claim and not already sent are
        kept; the loop then drops rows of keys held back, as it does for a claim. Notifications arrive in commit order, so a
        caught-up relay publishing them in that order keeps each key's order,
        as a claim would.
        """
        self._wake.clear()
        self._read_notifications()
        rows, self._notified = self._notified, []
        if self._claim_needed:
            self._claim_needed = False
            return None
        partitions, fences = self._notify_scope
        out = []
        for (position, id_, aggregatetype, aggregateid, type_, payload, timestamp, span, source,
             content_type, partition) in rows:
            if partition not in partitions or position in self._recent_set or position in unmarked:
                continue
            key = (aggregatetype, aggregateid)
            try:
                envelope, error = Envelope.from_columns(
                    id_, source, type_, aggregatetype, aggregateid,
                    dt.datetime.fromisoformat(timestamp).replace(tzinfo=dt.UTC),
                    base64.b64decode(payload) if payload else b"", content_type, span), None
            except Exception as exc:  # a row that cannot be an event is poison
                envelope, error = None, f"row cannot be read as a CloudEvent: {exc}"
            out.append(_Row(position, key, partition, 0, type_, envelope, error))
        return _Batch(out, fences, time.monotonic())

    def _on_notification(self, payload: str) -> None:
        """Keep the rows a notification carries; an empty one asks for a claim."""
        rows = None
        if payload:
            try:
                rows = json.loads(payload)
            except ValueError:
                rows = None
        if not rows or len(self._notified) + len(rows) > _MAX_NOTIFIED:
            self._claim_needed = True
            self._notified = []
        else:
            self._notified.extend(rows)

    def _read_notifications(self) -> None:
        """Take what the LISTEN connection received, without blocking; a broken one means a claim."""
        listener = self._listener
        if listener is not None and listener.listening and not listener.read():
            self._claim_needed = True  # notifications may be lost
            self._listen_retry_at = 0.0  # connect again at the next turn

    def _new_listener(self) -> Listener | None:
        if not self.options.notify or self.engine.dialect.name != "postgresql":
            return None
        try:
            import psycopg  # noqa: F401  (LISTEN needs psycopg 3; without it the relay polls)
        except ImportError:
            return None
        return Listener(self.engine.url, self.table.name, self._on_notification)

    def _listen(self) -> None:
        """Connect the LISTEN connection; on failure, poll and try again after ``poll_interval``."""
        try:
            self._listener.connect()
        except Exception as exc:
            self._listen_retry_at = time.monotonic() + self.options.poll_interval
            log.warning("LISTEN failed, polling meanwhile: %s", exc, extra={"relay": {"event": "listen"}})
            return
        self._on_notification("")  # rows may have committed while nobody listened: claim them
