"""The watch engine: rules over sliding windows of event metadata; no key needed.

``Watch(rules)`` is fed ``Observation``s (an event's attributes, destination,
the recipient key ids of its JWE, and the producer key id when a reader key
showed it) and returns the alerts each raises. Periodic checks (consumer
groups against the policy, the outbox against the broker) run from ``tick``.
Time is the arrival time (``clock``), never the event's own ``time``, which a
forged producer chooses.

Each pattern raises one alert per episode: a rate or burst alert fires when
the window first holds more than ``max`` events and re-arms once it holds
``max`` or fewer; a source, key or group alert fires once per offender and
again after ``repeat`` seconds if it goes on.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import fnmatch
import json
import time
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from ..envelope import JOSE_CONTENT_TYPE, Envelope, format_time
from .rules import BurstRule, GapRule, GroupRule, KeyRule, RateRule, Rule, RulesError, SourceRule

#: Evidence listed in one alert; the count says how many there were.
MAX_EVIDENCE = 100


@dataclasses.dataclass
class Observation:
    """What the watch sees of one event: attributes and wire metadata, never the data."""

    id: str
    type: str
    source: str
    subject: str = ""
    destination: str = ""
    time: dt.datetime | None = None
    recipients: tuple[str, ...] = ()
    producer_kid: str | None = None

    @classmethod
    def of(
        cls, envelope: Envelope, destination: str, producer_kid: str | None = None
    ) -> "Observation":
        """Return the observation of a received envelope; recipient kids come from the JWE's clear header."""
        return cls(
            id=envelope.id,
            type=envelope.type,
            source=envelope.source,
            subject=envelope.subject,
            destination=destination,
            time=envelope.time,
            recipients=recipient_kids(envelope)
            if envelope.datacontenttype == JOSE_CONTENT_TYPE
            else (),
            producer_kid=producer_kid,
        )


def recipient_kids(envelope: Envelope) -> tuple[str, ...]:
    """Return the ``kid`` of every JWE recipient (readable without keys), or () if the data is no JWE."""
    try:
        jwe = json.loads(envelope.data)
        return tuple(str(r["header"]["kid"]) for r in jwe.get("recipients", ()))
    except (ValueError, KeyError, TypeError, AttributeError):
        return ()


@dataclasses.dataclass
class Alert:
    """One suspicious pattern: which rule, over which window, the evidence, and what to look at."""

    rule: str
    kind: str
    summary: str
    window_seconds: float | None
    window_start: float
    window_end: float
    evidence: list[str]
    count: int
    look_at: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return the alert as a JSON-ready dict (one line of ``strangler watch`` output)."""
        return {
            "alert": self.rule,
            "kind": self.kind,
            "summary": self.summary,
            "window": {
                "seconds": self.window_seconds,
                "start": _iso(self.window_start),
                "end": _iso(self.window_end),
            },
            "count": self.count,
            "evidence": list(self.evidence),
            "look_at": self.look_at,
            **self.details,
        }

    def to_json(self) -> str:
        """Return the alert as one compact JSON line."""
        return json.dumps(self.as_dict(), separators=(",", ":"), ensure_ascii=False)


def _iso(seconds: float) -> str:
    return format_time(dt.datetime.fromtimestamp(seconds, dt.timezone.utc))


class Ledger(Protocol):
    """What the gap rule asks the outbox."""

    def published_between(self, start: float, end: float) -> Mapping[str, tuple[str, float]]:
        """Return {event id: (destination, published at)} of rows published between ``start`` and ``end`` (epoch seconds)."""

    def published_at(self, ids: Sequence[str]) -> Mapping[str, float]:
        """Return {event id: published at (epoch seconds)} for those of ``ids`` the outbox marked published."""

    def recorded(self, ids: Sequence[str]) -> set[str]:
        """Return those of ``ids`` that have a row in the outbox."""


Sink = Callable[[Alert], None]
GroupLister = Callable[[], Mapping[str, Iterable[str]]]


class _Window:
    """Event ids in a sliding window of ``seconds``, with the alert state of one episode."""

    __slots__ = ("items", "firing")

    def __init__(self) -> None:
        self.items: collections.deque[tuple[float, str]] = collections.deque()
        self.firing = False

    def add(self, now: float, event_id: str, seconds: float) -> int:
        items = self.items
        items.append((now, event_id))
        horizon = now - seconds
        while items[0][0] <= horizon:
            items.popleft()
        return len(items)

    def starts_episode(self, count: int, limit: int) -> bool:
        """True when ``count`` first goes over ``limit``: one alert per episode, re-armed below it."""
        if count <= limit:
            self.firing = False
            return False
        if self.firing:
            return False
        self.firing = True
        return True


class Watch:
    """Evaluates rules over event metadata; returns alerts and hands each to every sink."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        sinks: Sequence[Sink] = (),
        clock: Callable[[], float] = time.time,
        group_lister: GroupLister | None = None,
        ledger: Ledger | None = None,
        own_groups: Iterable[str] = (),
    ):
        self.rules = list(rules)
        self.sinks = list(sinks)
        self.clock = clock
        self.group_lister = group_lister
        self.ledger = ledger
        self.own_groups = set(own_groups)
        self.started = clock()
        self.alerts_raised = 0
        self.observed = 0
        self._by_type: dict[str, list[Rule]] = {}
        self._keys_checked: dict[str, float] = {}
        self._rate = {r.name: _Window() for r in self.rules if isinstance(r, RateRule)}
        self._burst: dict[str, dict[str, _Window]] = {
            r.name: {} for r in self.rules if isinstance(r, BurstRule)
        }
        self._burst_sweep: dict[str, float] = {}
        self._repeat: dict[tuple, float] = {}
        self._keyrings: dict[str, Any] = {}
        self._policies: dict[str, Any] = {}
        self._due: dict[str, float] = {}
        self._types_on: dict[str, dict[str, collections.deque]] = {}
        self._track_destinations = any(isinstance(r, GroupRule) for r in self.rules)
        self._gap_rules = [r for r in self.rules if isinstance(r, GapRule)]
        self._seen: dict[str, tuple[float, str, str, dt.datetime | None]] = {}
        #: Per destination, the first ids the watch read there: where its group began reading.
        self._first_seen: dict[str, list[str]] = {}
        self._reading_from: dict[str, float] = {}
        self._reported: set[str] = set()
        for rule in self.rules:
            if isinstance(rule, KeyRule):
                self._keyrings[rule.name] = _load_keyring(rule)
            elif isinstance(rule, GroupRule):
                self._policies[rule.name] = _load_policy(rule)

    # -- per event ---------------------------------------------------------------------------

    def _rules_for(self, event_type: str) -> list[Rule]:
        found = self._by_type.get(event_type)
        if found is None:
            if (
                len(self._by_type) > 10000
            ):  # types are few; a flood of random types must not grow this
                self._by_type.clear()
            found = self._by_type[event_type] = [
                r
                for r in self.rules
                if isinstance(r, (RateRule, BurstRule, SourceRule, KeyRule))
                and (isinstance(r, KeyRule) or fnmatch.fnmatchcase(event_type, r.type))
            ]
        return found

    def observe(self, obs: Observation) -> list[Alert]:
        """Evaluate the per-event rules on ``obs``; return (and sink) the alerts it raises."""
        now = self.clock()
        self.observed += 1
        alerts: list[Alert] = []
        for rule in self._rules_for(obs.type):
            if isinstance(rule, RateRule):
                self._check_rate(rule, obs, now, alerts)
            elif isinstance(rule, BurstRule):
                self._check_burst(rule, obs, now, alerts)
            elif isinstance(rule, SourceRule):
                self._check_source(rule, obs, now, alerts)
            else:
                self._check_keys(rule, obs, now, alerts)
        if self._track_destinations and obs.destination:
            ids = self._types_on.setdefault(obs.destination, {}).get(obs.type)
            if ids is None:
                ids = self._types_on[obs.destination][obs.type] = collections.deque(maxlen=10)
            ids.append(obs.id)
        if self._gap_rules:
            self._seen[obs.id] = (now, obs.destination, obs.source, obs.time)
            first = self._first_seen.setdefault(obs.destination, [])
            if len(first) < 10 and obs.destination not in self._reading_from:
                first.append(obs.id)
        return self._emit(alerts)

    def observe_envelope(
        self, envelope: Envelope, destination: str, producer_kid: str | None = None
    ) -> list[Alert]:
        """Observe a received envelope (see ``Observation.of``)."""
        return self.observe(Observation.of(envelope, destination, producer_kid))

    def _check_rate(
        self, rule: RateRule, obs: Observation, now: float, alerts: list[Alert]
    ) -> None:
        window = self._rate[rule.name]
        count = window.add(now, obs.id, rule.window)
        if window.starts_episode(count, rule.max):
            alerts.append(
                self._windowed(
                    rule,
                    window,
                    now,
                    f"{count} events of type {rule.type} in {_span(rule.window)}, more than the {rule.max} allowed",
                    rule.look_at
                    or f"who or what issued these {rule.type} events: the producer's requests and logs "
                    "in this window, and the aggregates they name ('strangler events trace ID' follows one)",
                    {"type": obs.type, "max": rule.max},
                )
            )

    def _check_burst(
        self, rule: BurstRule, obs: Observation, now: float, alerts: list[Alert]
    ) -> None:
        subjects = self._burst[rule.name]
        key = f"{obs.type.rsplit('.', 1)[0]}\x1f{obs.subject}"
        window = subjects.get(key)
        if window is None:
            window = subjects[key] = _Window()
        count = window.add(now, obs.id, rule.window)
        if window.starts_episode(count, rule.max):
            alerts.append(
                self._windowed(
                    rule,
                    window,
                    now,
                    f"subject {obs.subject!r} had {count} events in {_span(rule.window)}, more than the {rule.max} allowed",
                    rule.look_at
                    or f"why one aggregate ({obs.subject}) changes this often: a loop, a retry storm or a "
                    "script hitting it; trace the evidence ids",
                    {"subject": obs.subject, "type": obs.type, "max": rule.max},
                )
            )
        if now - self._burst_sweep.get(rule.name, 0.0) > rule.window:
            # Drop subjects whose window emptied, so memory follows the active subjects only.
            self._burst_sweep[rule.name] = now
            horizon = now - rule.window
            for stale in [k for k, w in subjects.items() if w.items[-1][0] <= horizon]:
                del subjects[stale]

    def _windowed(
        self, rule, window: _Window, now: float, summary: str, look_at: str, details: dict
    ) -> Alert:
        ids = [event_id for _, event_id in window.items]
        return Alert(
            rule=rule.name,
            kind=rule.kind,
            summary=summary,
            window_seconds=rule.window,
            window_start=window.items[0][0],
            window_end=now,
            evidence=ids[:MAX_EVIDENCE],
            count=len(ids),
            look_at=look_at,
            details=details,
        )

    def _once(self, key: tuple, repeat: float, now: float) -> bool:
        """True the first time ``key`` is seen, and again once ``repeat`` seconds have passed."""
        last = self._repeat.get(key)
        if last is not None and now - last < repeat:
            return False
        self._repeat[key] = now
        return True

    def _single(
        self, rule, obs_ids: list[str], now: float, summary: str, look_at: str, details: dict
    ) -> Alert:
        return Alert(
            rule=rule.name,
            kind=rule.kind,
            summary=summary,
            window_seconds=getattr(rule, "repeat", None),
            window_start=now,
            window_end=now,
            evidence=obs_ids[:MAX_EVIDENCE],
            count=len(obs_ids),
            look_at=rule.look_at or look_at,
            details=details,
        )

    def _check_source(
        self, rule: SourceRule, obs: Observation, now: float, alerts: list[Alert]
    ) -> None:
        if rule.sources and not any(fnmatch.fnmatchcase(obs.source, s) for s in rule.sources):
            if self._once((rule.name, "source", obs.type, obs.source), rule.repeat, now):
                alerts.append(
                    self._single(
                        rule,
                        [obs.id],
                        now,
                        f"{obs.type} from source {obs.source!r}, expected {', '.join(rule.sources)}",
                        f"who writes to {obs.destination or 'this destination'} as {obs.source!r}: a producer "
                        "deployed with the wrong source, or a forged producer with broker credentials",
                        {"type": obs.type, "source": obs.source, "destination": obs.destination},
                    )
                )
        if rule.producers and obs.producer_kid:
            name = obs.producer_kid.rsplit("-", 1)[0]
            if obs.producer_kid not in rule.producers and name not in rule.producers:
                if self._once(
                    (rule.name, "producer", obs.type, obs.producer_kid), rule.repeat, now
                ):
                    alerts.append(
                        self._single(
                            rule,
                            [obs.id],
                            now,
                            f"{obs.type} signed by {obs.producer_kid!r}, expected {', '.join(rule.producers)}",
                            f"where the signing key {obs.producer_kid} lives and who holds it; a consumer that "
                            "trusts it accepts these events",
                            {
                                "type": obs.type,
                                "producer_kid": obs.producer_kid,
                                "source": obs.source,
                            },
                        )
                    )

    def _check_keys(self, rule: KeyRule, obs: Observation, now: float, alerts: list[Alert]) -> None:
        if not obs.recipients and not obs.producer_kid:
            return
        ring = self._keyrings[rule.name]
        if now - self._keys_checked.get(rule.name, 0.0) >= 1.0:  # a rotation shows within a second
            self._keys_checked[rule.name] = now
            ring.reload_if_changed()
        named = [("recipient", kid) for kid in obs.recipients]
        if obs.producer_kid:
            named.append(("producer", obs.producer_kid))
        for role, kid in named:
            info = ring.get(kid)
            if info is None:
                problem = "unknown"
                look_at = f"{role} key {kid} is not in {rule.keys_dir}: " + (
                    "the event is encrypted to a reader outside the key folder (a forged producer, or a "
                    "tampered key folder at the producer)"
                    if role == "recipient"
                    else "a producer signing with a key nobody published (forged, or a key folder not synced)"
                )
            elif info.retired and _after(obs.time, info.retired, rule.grace):
                problem = "retired"
                look_at = (
                    f"{role} key {kid} was retired at {info.retired}, yet this event was sealed after that: a "
                    "producer that did not reload its key folder, or an old event replayed with a new time"
                )
            else:
                continue
            if self._once((rule.name, problem, role, kid), rule.repeat, now):
                alerts.append(
                    self._single(
                        rule,
                        [obs.id],
                        now,
                        f"{obs.type} names {problem} {role} key {kid}",
                        look_at,
                        {
                            "key": kid,
                            "role": role,
                            "problem": problem,
                            "type": obs.type,
                            "source": obs.source,
                        },
                    )
                )

    # -- periodic ----------------------------------------------------------------------------

    def tick(self, *, force: bool = False) -> list[Alert]:
        """Run the periodic checks that are due (all of them with ``force``); return their alerts."""
        now = self.clock()
        alerts: list[Alert] = []
        for rule in self.rules:
            if not isinstance(rule, (GroupRule, GapRule)):
                continue
            if not force and now < self._due.get(rule.name, 0.0):
                continue
            self._due[rule.name] = now + rule.every
            if isinstance(rule, GroupRule) and self.group_lister is not None:
                alerts.extend(self._check_groups(rule, self.group_lister(), now))
            elif isinstance(rule, GapRule) and self.ledger is not None:
                alerts.extend(self._check_gap(rule, now))
        return self._emit(alerts)

    def check_groups(self, groups: Mapping[str, Iterable[str]]) -> list[Alert]:
        """Check ``{destination: [group, …]}`` (as the broker reports it) against every groups rule."""
        now = self.clock()
        alerts: list[Alert] = []
        for rule in self.rules:
            if isinstance(rule, GroupRule):
                alerts.extend(self._check_groups(rule, groups, now))
        return self._emit(alerts)

    def _check_groups(
        self, rule: GroupRule, groups: Mapping[str, Iterable[str]], now: float
    ) -> list[Alert]:
        policy = self._policies[rule.name]
        alerts = []
        for destination, names in groups.items():
            types = self._types_on.get(destination, {})
            for group in names:
                if group in self.own_groups or any(
                    fnmatch.fnmatchcase(group, p) for p in rule.ignore
                ):
                    continue
                for event_type, ids in types.items():
                    readers = policy.readers_for(event_type)
                    if group in readers or (not readers and policy.plaintext_allowed(event_type)):
                        continue
                    if not self._once(
                        (rule.name, group, destination, event_type), rule.repeat, now
                    ):
                        continue
                    given = ", ".join(readers) or "no service"
                    alerts.append(
                        self._single(
                            rule,
                            list(ids),
                            now,
                            f"consumer group {group!r} reads {destination}, which carries {event_type}; "
                            f"the policy gives that type to {given}",
                            f"who created group {group} on {destination}: remove it, or add the service to "
                            f"[readers] for {event_type} in {rule.policy}",
                            {
                                "group": group,
                                "destination": destination,
                                "type": event_type,
                                "readers": list(readers),
                            },
                        )
                    )
        return alerts

    def _check_gap(self, rule: GapRule, now: float) -> list[Alert]:
        end = now - rule.grace
        start = now - rule.window
        alerts = []
        published = self.ledger.published_between(start, end)
        reading_from = self._reading_from_by_destination()
        missing = sorted(
            event_id
            for event_id, (destination, published_at) in published.items()
            if event_id not in self._seen
            and event_id not in self._reported
            and self._watches(destination)
            and published_at >= reading_from.get(destination, self.started)
        )
        if missing:
            self._reported.update(missing)
            alerts.append(
                _gap_alert(
                    rule, start, end, missing,
                    f"{len(missing)} events the outbox marked published are not on the broker",
                    "the broker's retention and trimming, deleted streams or queues, and "
                    "whether the relay marks rows before the broker's ack; 'strangler events trace ID' shows one",
                    {"gap": "missing-on-broker"},
                )
            )
        horizon = now - rule.window
        candidates = [
            event_id
            for event_id, (seen_at, _, source, event_time) in self._seen.items()
            if seen_at <= end
            and event_id not in self._reported
            and (not rule.sources or any(fnmatch.fnmatchcase(source, s) for s in rule.sources))
            and (event_time is None or event_time.timestamp() >= horizon)
        ]
        if candidates:
            recorded = self.ledger.recorded(candidates)
            unrecorded = sorted(set(candidates) - recorded)
            if unrecorded:
                self._reported.update(unrecorded)
                alerts.append(
                    _gap_alert(
                        rule, start, end, unrecorded,
                        f"{len(unrecorded)} events on the broker have no row in the outbox",
                        "who else can write to these destinations: a forged producer with "
                        "broker credentials, or another monolith's outbox (set the rule's sources)",
                        {
                            "gap": "not-in-outbox",
                            "sources": sorted({self._seen[i][2] for i in unrecorded}),
                            "destinations": sorted({self._seen[i][1] for i in unrecorded}),
                        },
                    )
                )
        # Forget what the window no longer covers.
        for event_id in [i for i, (seen_at, *_rest) in self._seen.items() if seen_at < horizon]:
            del self._seen[event_id]
            self._reported.discard(event_id)
        return alerts

    def _reading_from_by_destination(self) -> dict[str, float]:
        """When the watch's group began reading each destination: the publish time of the first event it read.

        Events published before that were never in the watch's view (a
        restarted watch resumes after them), so the gap rule does not count them.
        A destination the watch has read nothing from counts from the watch's start.
        """
        pending = [
            i for d, ids in self._first_seen.items() if d not in self._reading_from for i in ids
        ]
        if pending:
            times = self.ledger.published_at(pending)
            for destination, ids in list(self._first_seen.items()):
                known = [times[i] for i in ids if i in times]
                if known:
                    self._reading_from[destination] = min(known)
                    del self._first_seen[destination]
        return self._reading_from

    def _watches(self, destination: str) -> bool:
        watched = getattr(self.ledger, "destinations", None)
        return not watched or destination in watched

    def _emit(self, alerts: list[Alert]) -> list[Alert]:
        for alert in alerts:
            self.alerts_raised += 1
            for sink in self.sinks:
                sink(alert)
        return alerts


def _gap_alert(rule, start: float, end: float, event_ids: list[str], summary: str, look_at: str,
               details: dict) -> Alert:
    """An alert of the gap rule: ``event_ids`` on one side of the outbox/broker comparison only."""
    return Alert(
        rule=rule.name,
        kind=rule.kind,
        summary=summary,
        window_seconds=rule.window,
        window_start=start,
        window_end=end,
        evidence=event_ids[:MAX_EVIDENCE],
        count=len(event_ids),
        look_at=rule.look_at or look_at,
        details=details,
    )


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _after(event_time: dt.datetime | None, retired: str, grace: float) -> bool:
    """True when the event was sealed more than ``grace`` seconds after the key's retirement."""
    if event_time is None:
        return True
    try:
        retired_at = dt.datetime.fromisoformat(retired.replace("Z", "+00:00"))
    except ValueError:
        return True
    return (event_time - retired_at).total_seconds() > grace


def _load_keyring(rule: KeyRule):
    try:
        from ..crypto.keys import KeyFileError, KeyRing
    except ImportError as exc:
        raise RulesError(
            f"rule {rule.name!r}: kind 'key' reads key files, which needs the crypto extra: "
            f"pip install 'strangler[crypto]' ({exc})"
        ) from None
    try:
        return KeyRing.load(rule.keys_dir)
    except KeyFileError as exc:
        raise RulesError(f"rule {rule.name!r}: key 'keys_dir': {exc}") from None


def _load_policy(rule: GroupRule):
    try:
        from ..crypto.policy import PolicyError, load_policy
    except ImportError as exc:
        raise RulesError(
            f"rule {rule.name!r}: kind 'groups' reads the policy file, which needs the crypto extra: "
            f"pip install 'strangler[crypto]' ({exc})"
        ) from None
    try:
        return load_policy(rule.policy)
    except PolicyError as exc:
        raise RulesError(f"rule {rule.name!r}: key 'policy': {exc}") from None
