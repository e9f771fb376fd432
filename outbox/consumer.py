"""The consumer side: receive ▸ verify ▸ decrypt ▸ de-duplicate (inbox) ▸ handle, then ack.

A service extracted from the monolith writes handlers and runs the loop::

    from outbox.consumer import Consumer

    billing = Consumer("billing", engine, keys_dir=".strangler/keys", policy="strangler-policy.toml")

    @billing.handler("shop.order.created")
    def invoice(event, session):
        session.add(Invoice(order_id=event.data["id"], total=event.data["total"]))

    billing.run("redis://127.0.0.1:6379/0", destinations=["order"])

Each event is handled in one transaction of the service's database: the
inbox row (consumer, event id) and the handler's writes commit together, and
the broker is acked only after that commit. A redelivered event finds its id
in the inbox and is acked with no second effect. A handler that raises rolls
back; the event goes to the dead-letter table with the error, and the loop
goes on, unless the database refused it for now (a lock timeout, a deadlock):
then it is nacked and handled again later. A broker outage is waited out, also one that
fails an ack after the commit (the event comes again; the inbox absorbs it). An event that fails verification (forged, tampered, not for this
service, plaintext where encryption is expected) is dead-lettered with the
reason, never handled. Dead letters keep the event as received: ciphertext.

Without ``keys_dir``/``policy`` the consumer accepts only plaintext events (for
``encrypt_at = "off"`` in development) and dead-letters encrypted ones. With
them, a consumer the policy names as a reader must find its own private key in
``keys_dir``, or it refuses to start (``KeyFileError``) rather than reject its backlog.
A message that is not a CloudEvent at all is dead-lettered as ``malformed``
with the bytes received, and the rest of the batch is handled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fnmatch
import functools
import json
import logging
import random
import signal
import ssl
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from . import tracing
from .envelope import JOSE_CONTENT_TYPE, Envelope
from .inbox import dead_letter_table, inbox_table
from .routers import Delivery, RouterError, Subscription, masked_url, open_subscription
from .signals import stop_on_signal

log = logging.getLogger("outbox.consumer")

Handler = Callable[["Event", Session], Any]

#: Why ``Consumer.run`` must not run now (set while a tool imports a service module for its Consumer).
_run_refused: str | None = None


class RunDuringImport(RuntimeError):
    """``Consumer.run`` was called while a tool imported the service's module only to get its Consumer."""


@contextlib.contextmanager
def refusing_run(why: str) -> Iterator[None]:
    """For the block, ``Consumer.run`` raises ``RunDuringImport`` instead of consuming.

    ``strangler inbox retry --app`` imports the service's module to get its
    Consumer; a module that calls ``run()`` at import would start consuming
    live events in the middle of an operator's retry.
    """
    global _run_refused
    previous, _run_refused = _run_refused, why
    try:
        yield
    finally:
        _run_refused = previous

#: Wait between attempts to reach the broker again during an outage, in seconds: first, cap (doubling, with jitter).
OUTAGE_BACKOFF = (0.1, 30.0)

#: How long ``run(until_idle=True)`` tries to reach a broker that is down when it starts before it
#: raises, in seconds: enough for a broker restarting, not a batch job or a test hanging for ever.
IDLE_START_PATIENCE = 30.0


@dataclasses.dataclass(frozen=True)
class Event:
    """What a handler receives: the CloudEvent's attributes and its decrypted, decoded data."""

    id: str
    type: str
    source: str
    subject: str
    time: dt.datetime
    data: Any
    producer_kid: str | None
    envelope: Envelope = dataclasses.field(repr=False)
    redelivered: bool = False


@dataclasses.dataclass(frozen=True)
class Retried:
    """What handing one dead event to its handler again came to (``Consumer.retry_dead_letters``).

    ``outcome`` is one of the delivery outcomes (``handled``, ``duplicate``,
    ``ignored``, ``dead``, ``rejected``, ``retry``) or ``unreadable``: a dead
    letter of a message that is not a CloudEvent, which no handler can take.
    Only ``handled`` and ``duplicate`` remove the dead letter.
    """

    event_id: str
    type: str
    reason: str
    outcome: str
    error: str | None = None


@dataclasses.dataclass
class Stats:
    """Counts of what the consumer did, per outcome."""

    handled: int = 0
    duplicate: int = 0
    ignored: int = 0
    dead: int = 0
    rejected: int = 0
    retried: int = 0

    def total(self) -> int:
        """Every delivery seen."""
        return self.handled + self.duplicate + self.ignored + self.dead + self.rejected + self.retried


class Consumer:
    """One service's handlers, inbox and dead letters; ``run`` reads a router and handles events."""

    def __init__(
        self,
        name: str,
        db: Engine | sessionmaker | Callable[[], Session],
        *,
        keys_dir: str | None = None,
        policy: str | None = None,
        opener: Any = None,
        max_age: float | None = None,
    ):
        if not name or len(name) > 128:
            raise ValueError("consumer name must be 1-128 characters, e.g. the service name 'billing'")
        self.name = name
        self.sessions = sessionmaker(bind=db) if isinstance(db, Engine) else db
        if opener is None and (keys_dir or policy):
            if not (keys_dir and policy):
                raise ValueError("pass both keys_dir and policy to verify and decrypt events")
            from .crypto import KeyRing, Opener, load_policy

            opener = Opener(name, KeyRing.load(keys_dir), load_policy(policy))
            require_own_key(opener, keys_dir)
        self.opener = opener
        self.max_age = max_age
        self.stats = Stats()
        self._exact: dict[str, Handler] = {}
        self._patterns: list[tuple[str, Handler]] = []
        self._stop = threading.Event()
        self._group: str | None = None
        self._system = "strangler"

    # -- handlers ---------------------------------------------------------------------------

    def handler(self, event_type: str) -> Callable[[Handler], Handler]:
        """Decorator: handle events of ``event_type`` (an exact type or an fnmatch pattern such as ``shop.order.*``)."""

        def register(func: Handler) -> Handler:
            self.add_handler(event_type, func)
            return func

        return register

    def add_handler(self, event_type: str, func: Handler) -> None:
        """Register ``func(event, session)`` for ``event_type``; exact types win over patterns."""
        if any(ch in event_type for ch in "*?["):
            self._patterns.append((event_type, func))
        elif event_type in self._exact:
            raise ValueError(f"{self.name}: a handler for {event_type!r} is already registered")
        else:
            self._exact[event_type] = func

    def handler_for(self, event_type: str) -> Handler | None:
        """Return the handler of ``event_type``, or None."""
        found = self._exact.get(event_type)
        if found is not None:
            return found
        for pattern, func in self._patterns:
            if fnmatch.fnmatchcase(event_type, pattern):
                return func
        return None

    # -- one delivery ---------------------------------------------------------------------------

    def handle(self, delivery: Delivery) -> str:
        """Process one delivery; ack or nack it; return the outcome.

        Outcomes: ``handled``, ``duplicate`` (already in the inbox), ``ignored``
        (no handler), ``dead`` (the handler raised), ``rejected`` (failed
        verification), ``retry`` (the database could not record the outcome,
        or refused the handler's transaction for now: nacked, delivered again later). With OpenTelemetry, all of it runs in a
        ``process`` span continuing the event's trace (``outbox.tracing``).
        A message that is not a CloudEvent at all is dead-lettered as
        ``malformed`` with the bytes received, and acked (outcome ``rejected``).
        """
        if delivery.malformed is not None:
            return self._dead_letter(delivery, "malformed", delivery.malformed, record_inbox=False, outcome="rejected")
        with tracing.process_span(
            delivery.envelope, destination=delivery.destination, group=self._group or self.name, system=self._system
        ) as span:
            outcome = self._handle(delivery)
            tracing.record_outcome(span, outcome)
            return outcome

    def _handle(self, delivery: Delivery) -> str:
        envelope = delivery.envelope
        func = self.handler_for(envelope.type)
        if func is None:
            self._count("ignored")
            _ack(delivery)
            return "ignored"
        try:
            event = self._open(envelope, delivery.redelivered)
        except _Rejected as exc:
            return self._dead_letter(delivery, exc.reason, str(exc.cause), record_inbox=False, outcome="rejected")

        try:
            with self.sessions() as session:
                with session.begin():
                    outcome = self._handle_once(session, envelope, func, event)
        except _HandlerFailed as failed:
            # The exception's message goes to the dead letter (the service's own database) only: a
            # handler's message often quotes the data (`card declined: 4111…`), and logs travel further.
            log.warning(
                "%s: handler for %s failed on event %s: %s (its message is in the dead letter)",
                self.name, envelope.type, envelope.id, _raised_where(failed.cause),
            )
            return self._dead_letter(delivery, "handler", _describe(failed.cause), record_inbox=True, outcome="dead")
        except _Duplicate:
            # Another consumer process recorded this id first: its transaction has the effect.
            self._count("duplicate")
            _ack(delivery)
            return "duplicate"
        except IntegrityError as exc:  # a constraint the handler's writes broke, checked at commit
            return self._dead_letter(delivery, "handler", _describe(exc), record_inbox=True, outcome="dead")
        except Exception as exc:
            if is_transient_db_error(exc):
                log.warning("%s: transient database error on event %s (will be redelivered): %s",
                            self.name, envelope.id, _describe(exc))
            else:
                log.error("%s: cannot record event %s (will be redelivered): %s",
                          self.name, envelope.id, _describe(exc))
            _nack(delivery)
            return self._count("retry")
        self._count(outcome)  # committed: counted even if the broker does not take the ack
        _ack(delivery)
        return outcome

    def _handle_once(self, session: Session, envelope: Envelope, func: Handler, event: Event) -> str:
        """In ``session``'s transaction: ``duplicate`` if the inbox has the id, else record it handled and run ``func``.

        Raises ``_Duplicate`` when another process recorded the id first,
        ``_HandlerFailed`` when the handler raised; a transient database error
        propagates as it is (the database's moment, not the handler's failure).
        """
        if self._seen(session, envelope.id):
            return "duplicate"
        try:
            self._record(session, envelope, "handled")
        except IntegrityError:
            raise _Duplicate() from None
        try:
            func(event, session)
            session.flush()
        except Exception as exc:
            if is_transient_db_error(exc):
                raise
            raise _HandlerFailed(exc) from exc
        return "handled"

    def _count(self, outcome: str) -> str:
        attr = "retried" if outcome == "retry" else outcome
        setattr(self.stats, attr, getattr(self.stats, attr) + 1)
        return outcome

    def _open(self, envelope: Envelope, redelivered: bool, *, check_age: bool = True) -> Event:
        if self.opener is not None:
            from .crypto import RejectedEvent

            try:
                opened = self.opener.open(envelope)
            except RejectedEvent as exc:
                raise _Rejected(exc.reason, exc) from None
            except Exception as exc:  # an opener of another make: whatever it raises, this event is refused
                raise _Rejected("malformed", RuntimeError(f"event {envelope.id}: cannot be opened: "
                                                          f"{exc.__class__.__name__}")) from None
            data_bytes, producer_kid = opened.data, opened.producer_kid
        elif envelope.datacontenttype == JOSE_CONTENT_TYPE:
            raise _Rejected(
                "not-for-us",
                f"event {envelope.id} is encrypted, but consumer {self.name} has no keys: pass keys_dir and policy",
            )
        else:
            data_bytes, producer_kid = envelope.data, None
        if self.max_age is not None and check_age:
            age = (dt.datetime.now(dt.timezone.utc) - envelope.time).total_seconds()
            if age > self.max_age:
                raise _Rejected(
                    "replay",
                    f"event {envelope.id} is {age:.0f} s old, older than max_age {self.max_age:.0f} s "
                    "(a replay of an old event, or a backlog older than the inbox keeps ids)",
                )
        try:
            data = json.loads(data_bytes) if data_bytes else None
        except ValueError:
            raise _Rejected("malformed", f"event {envelope.id}: data is not JSON") from None
        return Event(
            id=envelope.id,
            type=envelope.type,
            source=envelope.source,
            subject=envelope.subject,
            time=envelope.time,
            data=data,
            producer_kid=producer_kid,
            envelope=envelope,
            redelivered=redelivered,
        )

    def _seen(self, session: Session, event_id: str) -> bool:
        found = session.execute(
            select(inbox_table.c.event_id).where(
                inbox_table.c.consumer == self.name, inbox_table.c.event_id == event_id
            )
        ).first()
        return found is not None

    def _record(self, session: Session, envelope: Envelope, outcome: str) -> None:
        session.execute(
            insert(inbox_table).values(
                consumer=self.name,
                event_id=envelope.id,
                type=envelope.type,
                source=envelope.source,
                outcome=outcome,
                handled_at=dt.datetime.now(dt.timezone.utc),
            )
        )
        session.flush()

    def _dead_letter(self, delivery: Delivery, reason: str, error: str, *, record_inbox: bool, outcome: str) -> str:
        envelope = delivery.envelope
        letter = _letter_of(delivery)
        ident = letter["event_id"]
        try:
            with self.sessions() as session:
                with session.begin():
                    if record_inbox:
                        if self._seen(session, envelope.id):
                            self._count("duplicate")
                            _ack(delivery)
                            return "duplicate"
                        self._record(session, envelope, "dead")
                    session.execute(
                        insert(dead_letter_table).values(
                            consumer=self.name,
                            reason=reason,
                            error=error[:10000],
                            received_at=dt.datetime.now(dt.timezone.utc),
                            **letter,
                        )
                    )
        except IntegrityError:
            self._count("duplicate")
            _ack(delivery)
            return "duplicate"
        except BrokerLost:
            raise  # the broker, not the database: run() reconnects
        except Exception as exc:
            log.error("%s: cannot dead-letter event %s (will be redelivered): %s", self.name, ident, _describe(exc))
            _nack(delivery)
            return self._count("retry")
        if outcome == "rejected":
            log.warning("%s: rejected event %s (%s): %s", self.name, ident, reason, error)
        self._count(outcome)
        _ack(delivery)
        return outcome

    # -- the loop -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run`` to return after the event it is handling."""
        self._stop.set()

    def run(
        self,
        router_url: str | None = None,
        *,
        destinations: Iterable[str] = (),
        group: str | None = None,
        subscription: Subscription | None = None,
        batch: int = 100,
        poll: float = 1.0,
        until_idle: bool = False,
        max_events: int | None = None,
        install_signals: bool = True,
        **options: Any,
    ) -> Stats:
        """Receive and handle events until ``stop()`` (or SIGTERM/SIGINT); return the counts.

        ``group`` is the consumer group (default: the consumer's name), so
        several processes of one service share the work. ``until_idle`` returns
        once a receive comes back empty (tests, batch jobs); ``max_events``
        returns after that many deliveries. A receive that fails (the broker
        went away) is an outage, not the end: logged, the subscription closed
        and opened again after a backoff with jitter (``OUTAGE_BACKOFF``), for
        as long as it lasts; ``stop()`` ends the wait. A broker that cannot be
        reached when ``run`` starts is the same outage (with ``until_idle``,
        waited out for ``IDLE_START_PATIENCE`` seconds, then raised). What no
        retry can fix raises at once, before any wait: a malformed URL, an
        unknown scheme or option, a missing client library, TLS files that
        cannot be loaded, credentials the broker refused (``is_setup_error``).
        """
        if _run_refused is not None:
            raise RunDuringImport(
                f"{self.name}: Consumer.run() was called while {_run_refused}; "
                "keep the call to run() under if __name__ == \"__main__\" (or in a main() function)"
            )
        self._group = group or self.name
        if router_url:
            self._system = tracing.system_of(router_url)
        reopen: Callable[[], Subscription] | None = None
        if subscription is None:
            if not router_url:
                raise ValueError("pass router_url (e.g. redis://127.0.0.1:6379/0) or subscription")
            reopen = functools.partial(
                open_subscription, router_url, group=group or self.name, destinations=list(destinations), **options
            )
        self._stop.clear()
        restore = self._install_signals() if install_signals else {}
        seen = 0
        backoff = 0.0
        outage = 0.0
        refused = 0.0
        # Opened in the loop: a broker down at start is an outage like any other. Until the first
        # open succeeds, a mistake in the URL or options (is_setup_error) is raised, not retried.
        opened = reopen is None
        begun = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    if subscription is None:
                        subscription = reopen()
                        opened = True
                    deliveries = subscription.receive(max_events=batch, timeout=poll)
                except Exception as exc:  # the broker went away: nothing in hand, so nothing to ack
                    outage = min(max(outage * 2, OUTAGE_BACKOFF[0]), OUTAGE_BACKOFF[1])
                    wait = outage
                    if not opened:
                        if is_setup_error(exc):
                            raise
                        if until_idle:
                            left = begun + IDLE_START_PATIENCE - time.monotonic()
                            if left <= 0:
                                log.error("%s: broker still unreachable at %s after %.0f s; until_idle gives up: %s",
                                          self.name, masked_url(router_url), IDLE_START_PATIENCE, _describe(exc))
                                raise
                            wait = min(wait, max(left, OUTAGE_BACKOFF[0]))  # the last try near the deadline
                    subscription = self._outage(subscription, reopen, router_url, exc, wait)
                    continue
                outage = 0.0
                if not deliveries and until_idle:
                    break
                retried = False
                try:
                    for index, delivery in enumerate(deliveries):
                        if self._stop.is_set() or (max_events is not None and seen >= max_events):
                            for rest in deliveries[index:]:
                                _nack(rest)
                            break
                        outcome = self.handle(delivery)
                        seen += 1
                        if outcome == "retry":
                            # The database is unhealthy: give the rest back and wait.
                            for rest in deliveries[index + 1:]:
                                _nack(rest)
                            retried = True
                            break
                except BrokerLost as lost:  # mid-batch: the rest are not acked, so the broker has them again
                    # Grows across refusals although each receive succeeds: a broker that refuses every
                    # ack (a permission missing) is retried ever more slowly, not every 0.1 s.
                    refused = min(max(refused * 2, OUTAGE_BACKOFF[0]), OUTAGE_BACKOFF[1])
                    subscription = self._outage(subscription, reopen, router_url, lost.cause, refused,
                                                what="broker refused an ack or nack")
                    continue
                refused = 0.0
                if max_events is not None and seen >= max_events:
                    break
                if retried:
                    backoff = min(max(backoff * 2, 0.1), 5.0)
                    self._stop.wait(backoff)
                else:
                    backoff = 0.0
        finally:
            for signum, previous in restore.items():
                signal.signal(signum, previous)
            if subscription is not None:
                subscription.close()
        return self.stats

    def _outage(
        self, subscription: Subscription | None, reopen: Callable[[], Subscription] | None,
        router_url: str | None, exc: Exception, backoff: float, what: str = "broker unreachable",
    ) -> Subscription | None:
        """Drop the broken subscription and wait ``backoff`` with jitter (or until ``stop()``); return what to read next.

        None when it can be reopened (``run`` opens it again before the next
        receive, and comes back here if the broker still refuses); the
        caller's own subscription when ``run`` was given one, read again as it is.
        """
        delay = backoff * (0.5 + random.random() / 2)
        where = masked_url(router_url) if router_url else "the subscription"
        log.warning("%s: %s at %s, reconnecting in %.1f s: %s", self.name, what, where, delay, _describe(exc))
        if reopen is not None and subscription is not None:
            try:
                subscription.close()
            except Exception:  # closing a dead connection may fail too; it is dropped either way
                pass
            subscription = None
        self._stop.wait(delay)
        return subscription

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, stop_on_signal(self.stop))
        return previous

    # -- dead letters ------------------------------------------------------------------------------

    def retry_dead_letters(
        self, *, event_ids: Iterable[str] = (), event_type: str | None = None, reasons: Iterable[str] | None = None,
    ) -> list[Retried]:
        """Hand this consumer's dead events to their handlers again, oldest first; return what each came to.

        For after the cause is fixed: a handler's bug, a key or policy that was
        missing. Each event is verified and decrypted again, then handled as a
        delivery is, in one transaction that also turns its inbox row from
        ``dead`` to ``handled`` and deletes its dead letters: the retry has
        its effect once, or not at all. An event that fails again keeps its
        dead letter, with the new error. ``event_ids``, ``event_type`` (an
        exact type or an fnmatch pattern) and ``reasons`` narrow the retry.
        ``max_age`` does not apply: an operator asked for these events.

        Letters of reason ``replay`` (older than ``max_age``: an old event sent
        again, perhaps after its inbox row was purged) are retried only when
        named, by id or in ``reasons``: handled again, such an event could
        have a second effect, which ``max_age`` is there to stop.

        The retried event comes after events of its aggregate that were handled
        since it died; a handler that must not apply an old change over a newer
        one compares ``event.time`` (or a version in the data) with its row.
        """
        wanted = set(event_ids)
        chosen = set(reasons) if reasons is not None else None
        done: set[str] = set()
        results = []
        for letter in self._letters(wanted):
            if letter["event_id"] in done:
                continue  # an id's oldest letter speaks for it; the retry settles them all
            if event_type and not fnmatch.fnmatchcase(letter["type"], event_type):
                continue
            if chosen is not None and letter["reason"] not in chosen:
                continue
            if chosen is None and letter["reason"] == "replay" and letter["event_id"] not in wanted:
                continue
            done.add(letter["event_id"])
            results.append(self._retry(letter))
        return results

    def _letters(self, event_ids: set[str], page: int = 200) -> Iterable[dict[str, Any]]:
        """This consumer's dead letters, oldest first, a page at a time: a backlog of them need not fit in memory."""
        t = dead_letter_table
        after = 0
        while True:
            query = select(t).where(t.c.consumer == self.name, t.c.position > after)
            if event_ids:
                query = query.where(t.c.event_id.in_(sorted(event_ids)))
            with self.sessions() as session:
                rows = session.execute(query.order_by(t.c.position).limit(page)).all()
            for row in rows:
                yield dict(row._mapping)
            if len(rows) < page:
                return
            after = rows[-1].position

    def _retry(self, letter: dict[str, Any]) -> Retried:
        def came_to(outcome: str, error: str | None = None) -> Retried:
            return Retried(letter["event_id"], letter["type"], letter["reason"], outcome, error)

        try:
            envelope = Envelope.from_json(letter["event"])
        except Exception as exc:  # a malformed message: kept for a person to read, never handled
            # What it keeps is the message as the broker gave it (headers, then body), not a JSON
            # CloudEvent: the error to show is why it was refused when it came, not a new parse's.
            return came_to("unreadable", letter.get("error") or _describe(exc))
        func = self.handler_for(envelope.type)
        if func is None:
            return came_to("ignored", f"consumer {self.name} has no handler for {envelope.type}")
        try:
            event = self._open(envelope, redelivered=True, check_age=False)
        except _Rejected as exc:
            return came_to("rejected", self._still_dead(envelope.id, exc.reason, str(exc.cause)))
        try:
            with self.sessions() as session:
                with session.begin():
                    session.execute(delete(inbox_table).where(
                        inbox_table.c.consumer == self.name, inbox_table.c.event_id == envelope.id,
                        inbox_table.c.outcome == "dead",
                    ))
                    # duplicate: handled since (delivered again after its inbox row was deleted by hand)
                    outcome = self._handle_once(session, envelope, func, event)
                    session.execute(delete(dead_letter_table).where(
                        dead_letter_table.c.consumer == self.name, dead_letter_table.c.event_id == envelope.id,
                    ))
        except _HandlerFailed as failed:
            return came_to("dead", self._still_dead(envelope.id, "handler", _describe(failed.cause)))
        except _Duplicate:  # a running process of this consumer handled the event meanwhile
            self._forget_letters(envelope.id)
            return came_to("duplicate")
        except IntegrityError as exc:  # the handler's writes broke a constraint at commit
            return came_to("dead", self._still_dead(envelope.id, "handler", _describe(exc)))
        except Exception as exc:
            return came_to("retry", _describe(exc))
        return came_to(outcome)

    def _still_dead(self, event_id: str, reason: str, error: str) -> str:
        """Record on the event's dead letters why its retry failed; return the error (and why it could not be recorded)."""
        try:
            with self.sessions() as session:
                with session.begin():
                    session.execute(
                        update(dead_letter_table)
                        .where(dead_letter_table.c.consumer == self.name, dead_letter_table.c.event_id == event_id)
                        .values(reason=reason, error=error[:10000])
                    )
        except Exception as exc:  # the outcome stands; the letter keeps its old error
            return f"{error} (not recorded on the dead letter: {_describe(exc)})"
        return error

    def _forget_letters(self, event_id: str) -> None:
        """Delete the event's dead letters: it has been handled."""
        try:
            with self.sessions() as session:
                with session.begin():
                    session.execute(delete(dead_letter_table).where(
                        dead_letter_table.c.consumer == self.name, dead_letter_table.c.event_id == event_id,
                    ))
        except Exception:  # left for the next retry, which finds the event handled
            pass

    def dead_letters(self) -> list[dict[str, Any]]:
        """Return this consumer's dead letters, oldest first (the event as received, reason, error)."""
        with self.sessions() as session:
            rows = session.execute(
                select(dead_letter_table)
                .where(dead_letter_table.c.consumer == self.name)
                .order_by(dead_letter_table.c.position)
            ).all()
        return [dict(row._mapping) for row in rows]


def require_own_key(opener: Any, keys_dir: str) -> None:
    """Refuse to start a consumer the policy sends encrypted events to, when it holds no key to open them.

    Started anyway, it would reject every one of those events as not for it and
    ack it: the whole backlog dead-lettered by a setup mistake (a wrong
    ``keys_dir``, or keys not created yet), where stopping costs nothing.
    """
    from .crypto import KeyFileError

    service = opener.service
    readable = sorted(pattern for pattern, readers in opener.policy.readers.items() if service in readers)
    if not readable or any(key.name == service for key in opener.keyring.decryption_keys().values()):
        return
    raise KeyFileError(
        f"consumer {service!r}: {opener.policy.origin} lets it read {', '.join(readable)} encrypted, but the keys "
        f"folder {keys_dir} holds no private key of {service!r}, so it could open none of those events; "
        f"create one with 'strangler keys new {service}' (and give the producer its public key), "
        f"or copy {service}'s private key file ({service}-N.private.jwk) into {keys_dir}"
    )


#: SQLSTATEs (PostgreSQL) of a transaction refused for now: serialization failure, deadlock, lock not available.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
#: MySQL/MariaDB error numbers of the same: lock wait timeout, deadlock.
TRANSIENT_MYSQL_ERRORS = frozenset({1205, 1213})


def is_transient_db_error(exc: BaseException) -> bool:
    """True when the database refused the transaction for now, not for good: the same event may succeed later.

    A lock timeout, a deadlock, a serialization failure or a lost connection
    says nothing about the event or the handler: two processes of one service
    updating the same rows meet them in normal operation. Dead-lettering on
    them would record the event as ``dead`` in the inbox and drop its update
    for good, so the consumer rolls back, nacks and has it delivered again
    instead. Every other error (a bug, a broken constraint) stays permanent.
    """
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig if exc.orig is not None else exc
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)  # psycopg 3, psycopg2
    if sqlstate in TRANSIENT_SQLSTATES:
        return True
    args = getattr(exc, "args", ())
    if type(exc).__name__ in ("OperationalError", "InternalError") and args and isinstance(args[0], int) \
            and args[0] in TRANSIENT_MYSQL_ERRORS:
        return True  # PyMySQL, mysqlclient and mariadb put the error number first
    return type(exc).__name__ == "OperationalError" and "database is locked" in str(exc)  # SQLite


#: Names of the broker clients' "credentials refused" errors (redis-py, pika, nats-py): not imported,
#: since only the client the URL names is installed.
_AUTH_ERRORS = frozenset({
    "AuthenticationError", "AuthenticationWrongNumberOfArgsError", "ProbableAuthenticationError",
    "AuthorizationError",
})
#: TLS errors of a connection cut or a server certificate refused: the broker's moment or its side to fix.
_TLS_TRANSIENT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError, ssl.SSLWantReadError,
                  ssl.SSLWantWriteError, ssl.SSLCertVerificationError)


def is_setup_error(exc: BaseException) -> bool:
    """True when opening a subscription failed for a reason no retry can fix; False for an outage.

    Setup errors: a ``RouterError`` raised by the router's own checks, before
    any connection (no underlying cause: an unknown scheme or option, a URL
    with no scheme, no destination, TLS options on a plain URL); a malformed
    URL or option value (``ValueError``, ``TypeError``); a missing client
    library (``ImportError``); TLS files that cannot be read or loaded (a
    missing file, not a certificate or key, TLS spoken to a plain port); and
    credentials the broker refused. Everything else (connection refused or
    reset, a timeout, a host name not resolving yet, a broker still loading)
    is an outage: ``Consumer.run`` waits it out.
    """
    first: BaseException | None = exc
    if isinstance(exc, RouterError):
        first = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if first is None:  # the router's own check (``raise RouterError(...) from None`` too)
            return True
    if isinstance(first, (ImportError, ValueError, TypeError)):
        return True
    for link in _chain(exc):
        if isinstance(link, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
            return True  # a TLS file named in the URL or options
        if isinstance(link, ssl.SSLError) and not isinstance(link, _TLS_TRANSIENT):
            return True  # a file that is no certificate or key, or TLS to a plain port
        if type(link).__name__ in _AUTH_ERRORS:
            return True
    return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from, or while handling."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)


class BrokerLost(Exception):
    """The broker refused an ack or a nack: the connection is gone, and the deliveries in hand with it.

    What the handler did is committed (or was rolled back); the broker delivers
    the event again, and the inbox absorbs it. ``Consumer.run`` treats it as
    an outage: it reconnects and goes on.
    """

    def __init__(self, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


def _ack(delivery: Delivery) -> None:
    try:
        delivery.ack()
    except Exception as exc:
        raise BrokerLost(exc) from exc


def _nack(delivery: Delivery) -> None:
    try:
        delivery.nack()
    except Exception as exc:
        raise BrokerLost(exc) from exc


class _Rejected(Exception):
    def __init__(self, reason: str, cause: Any):
        super().__init__(str(cause))
        self.reason = reason
        self.cause = cause


class _Duplicate(Exception):
    pass


class _HandlerFailed(Exception):
    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


#: The most a dead letter keeps of a message that is not a CloudEvent: enough to see what it was.
MAX_MALFORMED_BYTES = 1024 * 1024


def _letter_of(delivery: Delivery) -> dict[str, Any]:
    """The dead-letter columns that describe what was received: the event, or the raw message and where it was."""
    envelope = delivery.envelope
    if envelope is None:
        where = delivery.location or delivery.destination or "unknown"
        return {"event_id": where[:255], "type": "", "source": "", "event": delivery.raw[:MAX_MALFORMED_BYTES]}
    # As received: ciphertext if it was encrypted.
    return {"event_id": envelope.id, "type": envelope.type, "source": envelope.source, "event": envelope.to_json()}


def _raised_where(exc: BaseException) -> str:
    """``ValueError at billing/service.py:42 in charge``: the exception's class and where it was raised, no message."""
    frame = None
    tb = exc.__traceback__
    while tb is not None:
        frame, tb = tb, tb.tb_next
    if frame is None:
        return exc.__class__.__name__
    code = frame.tb_frame.f_code
    return f"{exc.__class__.__name__} at {code.co_filename}:{frame.tb_lineno} in {code.co_name}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
