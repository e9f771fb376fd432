"""The journey of one event, from what strangler itself records: no tracing back-end needed.

``trace_event(event_id, db_url, router_url=..., inbox_urls=[...])`` reads

* the outbox row: emitted (time, type, aggregate, source, trace context),
  published (by which relay, when, after how many attempts, the last error),
  or dead;
* the broker, when a router URL is given: which destination holds the event,
  where, and which consumer groups have read past it;
* each service database's inbox and dead letters: handled by which service,
  when, with which outcome;

and returns a ``Journey`` with the latency of every hop. Each source is
optional: a purged outbox row still leaves the inbox records, and the other
way round.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from types import SimpleNamespace
from typing import Any, Iterable

from sqlalchemy import create_engine, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from .envelope import _split_span_context, format_time
from .routers import Destinations, masked_url, split_destination_prefix
from .table import DEFAULT_TABLE_NAME, get_outbox_table


class TraceError(Exception):
    """A database or router named for the trace cannot be read; the message names it."""


@dataclasses.dataclass
class Hop:
    """One step of the journey: what happened, where, when, and how long after the previous step."""

    step: str  # emitted | published | dead | pending | on-broker | delivered | handled | dead-lettered
    at: dt.datetime | None
    where: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Since the commit that emitted the event. Not since the publish: the relay marks a row
    # published after the broker took it, so the broker's time (and a quick consumer's) comes first.
    latency_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "step": self.step,
            "at": format_time(self.at) if self.at else None,
            "where": self.where,
            "latency_seconds": None
            if self.latency_seconds is None
            else round(self.latency_seconds, 6),
            **self.details,
        }


@dataclasses.dataclass
class Journey:
    """Everything strangler recorded about one event, in order."""

    event_id: str
    found: bool
    type: str | None = None
    aggregate: str | None = None
    traceparent: str | None = None
    hops: list[Hop] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "event_id": self.event_id,
            "found": self.found,
            "type": self.type,
            "aggregate": self.aggregate,
            "traceparent": self.traceparent,
            "hops": [hop.as_dict() for hop in self.hops],
            "notes": list(self.notes),
        }

    def hop(self, step: str) -> Hop | None:
        """Return the first hop called ``step``, or None."""
        return next((h for h in self.hops if h.step == step), None)


def trace_event(
    event_id: str,
    db_url: str | None,
    *,
    router_url: str | None = None,
    inbox_urls: Iterable[str] = (),
    table_name: str = DEFAULT_TABLE_NAME,
    destinations: Iterable[str] = (),
) -> Journey:
    """Return the journey of event ``event_id`` through the outbox, the broker and each inbox.

    ``destinations`` narrows where the broker is searched; by default the
    destination is the one the row's aggregate type names, else every one.
    Names are given as consumers give them: a ``destination_prefix`` in
    ``router_url`` is put before each, so the search reads what the relay
    published to (and, searching every one, only the prefix's).
    """
    journey = Journey(event_id=event_id, found=False)
    routing = _routing(router_url)
    row = _outbox_row(db_url, event_id, table_name) if db_url else None
    emitted_at = published_at = None
    if row is not None:
        journey.found = True
        journey.type = row["type"]
        journey.aggregate = f"{row['aggregatetype']}:{row['aggregateid']}"
        journey.traceparent, _ = _split_span_context(row.get("tracingspancontext"))
        emitted_at = row["timestamp"]
        journey.hops.append(
            Hop(
                "emitted",
                emitted_at,
                f"outbox {table_name}",
                {
                    "type": row["type"],
                    "aggregatetype": row["aggregatetype"],
                    "aggregateid": row["aggregateid"],
                    "source": row["source"],
                    "content_type": row["content_type"],
                    "position": row["position"],
                },
            )
        )
        relay = {
            "relay": row.get("published_by"),
            "attempts": row.get("attempts"),
            "last_error": row.get("last_error"),
            "destination": _published_to(routing, row),
        }
        if row.get("published_at") is not None:
            published_at = row["published_at"]
            journey.hops.append(
                Hop("published", published_at, "relay", relay, _seconds(emitted_at, published_at))
            )
        elif row.get("dead_at") is not None:
            journey.hops.append(
                Hop("dead", row["dead_at"], "relay", relay, _seconds(emitted_at, row["dead_at"]))
            )
            journey.notes.append(
                f"the relay gave up after {row.get('attempts')} attempts; fix the cause, then "
                f"'strangler outbox retry {event_id}'"
            )
        else:
            relay["available_at"] = (
                format_time(row["available_at"]) if row.get("available_at") else None
            )
            journey.hops.append(Hop("pending", None, "relay", relay))
            journey.notes.append("not published yet: is a relay running against this database?")
    elif db_url:
        journey.notes.append(
            f"event {event_id} is not in {table_name}: purged after publishing, emitted by another "
            "database, or never emitted"
        )

    if router_url:
        wanted = [routing.prefix + d for d in destinations] or (
            [_published_to(routing, row)] if row is not None else []
        )
        found = _on_broker(router_url, event_id, wanted, routing.prefix)
        if found is None:
            everything = f"all starting with {routing.prefix!r}" if routing.prefix else "all"
            journey.notes.append(
                f"not found on {masked_url(router_url)} (destinations searched: {', '.join(wanted) or everything})"
            )
        else:
            journey.found = True
            at, where, details, groups = found
            if journey.type is None:
                journey.type = details.get("type")
            journey.hops.append(
                Hop("on-broker", at, where, details, _seconds(emitted_at, at))
            )
            for group in groups:
                journey.hops.append(Hop("delivered", None, where, {"group": group}))

    for url in inbox_urls:
        for hop in _inbox_hops(url, event_id):
            journey.found = True
            hop.latency_seconds = _seconds(emitted_at, hop.at)
            if journey.type is None:
                journey.type = hop.details.get("type")
            journey.hops.append(hop)
    return journey


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def _routing(router_url: str | None) -> Destinations:
    """The relay's routing for ``router_url``: its ``destination_prefix``, as ``open_router`` applies it."""
    return Destinations(prefix=split_destination_prefix(router_url)[1] if router_url else "")


def _published_to(routing: Destinations, row: dict[str, Any]) -> str:
    """The destination the relay sent ``row`` to: what ``Destinations`` computes, so the two cannot drift."""
    return routing.for_event(SimpleNamespace(type=row["type"], aggregatetype=row["aggregatetype"]))


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _outbox_row(db_url: str, event_id: str, table_name: str) -> dict[str, Any] | None:
    table = get_outbox_table(table_name)
    try:
        engine = create_engine(db_url)
    except Exception as exc:
        raise TraceError(f"--db {db_url!r}: not a database URL: {exc}") from None
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(table_name):
                raise TraceError(
                    f"{_redact(db_url)} has no table {table_name}: run 'strangler outbox migrate', "
                    "or set outbox_table"
                )
            found = conn.execute(select(table).where(table.c.id == event_id)).first()
    except SQLAlchemyError as exc:
        raise TraceError(
            f"cannot read {table_name} in {_redact(db_url)}: {exc.__class__.__name__}: {exc}"
        ) from None
    finally:
        engine.dispose()
    return dict(found._mapping) if found is not None else None


def _inbox_hops(url: str, event_id: str) -> list[Hop]:
    from .inbox import dead_letter_table, inbox_table

    try:
        engine = create_engine(url)
    except Exception as exc:
        raise TraceError(f"--inbox-db {url!r}: not a database URL: {exc}") from None
    hops: list[Hop] = []
    where = _redact(url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            if inbox_table.name not in tables:
                raise TraceError(
                    f"{where} has no {inbox_table.name} table: is it a service database with the inbox?"
                )
            for row in conn.execute(
                select(inbox_table)
                .where(inbox_table.c.event_id == event_id)
                .order_by(inbox_table.c.handled_at)
            ):
                m = row._mapping
                hops.append(
                    Hop(
                        "handled" if m["outcome"] == "handled" else "dead-lettered",
                        m["handled_at"],
                        f"{m['consumer']} ({where})",
                        {"service": m["consumer"], "outcome": m["outcome"], "type": m["type"]},
                    )
                )
            if dead_letter_table.name in tables:
                for row in conn.execute(
                    select(
                        dead_letter_table.c.consumer,
                        dead_letter_table.c.reason,
                        dead_letter_table.c.error,
                        dead_letter_table.c.received_at,
                        dead_letter_table.c.type,
                    ).where(dead_letter_table.c.event_id == event_id)
                ):
                    m = row._mapping
                    # A handler failure also has an inbox row ("dead"): add the reason to it.
                    twin = next(
                        (
                            h
                            for h in hops
                            if h.details.get("service") == m["consumer"]
                            and h.step == "dead-lettered"
                        ),
                        None,
                    )
                    if twin is not None:
                        twin.details.update(reason=m["reason"], error=m["error"])
                    else:
                        hops.append(
                            Hop(
                                "dead-lettered",
                                m["received_at"],
                                f"{m['consumer']} ({where})",
                                {
                                    "service": m["consumer"],
                                    "reason": m["reason"],
                                    "error": m["error"],
                                    "type": m["type"],
                                },
                            )
                        )
    except SQLAlchemyError as exc:
        raise TraceError(
            f"cannot read the inbox in {where}: {exc.__class__.__name__}: {exc}"
        ) from None
    finally:
        engine.dispose()
    return hops


# -- the broker ------------------------------------------------------------------------------


def _on_broker(
    router_url: str, event_id: str, destinations: list[str], prefix: str = ""
) -> tuple[dt.datetime | None, str, dict[str, Any], list[str]] | None:
    """Return (stored at, where, details, groups that read past it) for the event, or None.

    ``destinations`` are the names on the broker (prefixed); with none, every
    destination starting with ``prefix`` is searched.
    """
    scheme = router_url.split("://", 1)[0]
    if scheme == "file":
        return _on_file_broker(router_url, event_id, destinations, prefix)
    if scheme in ("redis", "rediss"):
        return _on_redis(router_url, event_id, destinations, prefix)
    raise TraceError(
        f"--router {masked_url(router_url)}: looking an event up is supported on file:// and redis:// routers; "
        "leave --router out to trace from the outbox and the inboxes"
    )


def _on_file_broker(router_url: str, event_id: str, destinations: list[str], prefix: str = ""):
    from .routers.file import _SAFE, _file_name, folder_of

    folder = folder_of(router_url)
    if not folder.is_dir():
        raise TraceError(f"--router {masked_url(router_url)}: no folder {folder}")
    if destinations:
        files = [(d, folder / _file_name(d)) for d in destinations]
    else:
        files = [(p.name[: -len(".jsonl")], p) for p in sorted(folder.glob(f"{_SAFE.sub('_', prefix)}*.jsonl"))]
    needle = f'"id":"{event_id}"'.encode()
    for destination, path in files:
        if not path.exists():
            continue
        offset = 0
        with open(path, "rb") as handle:
            for line in handle:
                start, offset = offset, offset + len(line)
                if needle not in line:
                    continue
                doc = json.loads(line)
                groups = []
                groups_dir = folder / ".groups"
                if groups_dir.is_dir():
                    for group_dir in sorted(groups_dir.iterdir()):
                        offset_file = group_dir / (_SAFE.sub("_", destination) + ".offset")
                        try:
                            committed = int(offset_file.read_text() or 0)
                        except (OSError, ValueError):
                            continue
                        if committed >= offset:
                            groups.append(group_dir.name)
                details = {"destination": destination, "type": doc.get("type"), "offset": start}
                # The file router keeps no time per line: the hop has no time of its own.
                return None, f"{path}", details, groups
    return None


def _on_redis(router_url: str, event_id: str, destinations: list[str], prefix: str = ""):
    try:
        import redis
    except ImportError:
        raise TraceError(
            "tracing on redis:// needs the redis client: pip install 'strangler[redis]'"
        ) from None
    from .routers import RouterError
    from .routers.redis import _client

    try:
        _, client = _client(router_url, {})  # the router's own URL handling: options checked, TLS files
    except RouterError as exc:
        raise TraceError(str(exc)) from None
    try:
        streams = destinations or sorted(
            key.decode() for key in client.scan_iter(match=_glob_escape(prefix) + "*", _type="stream", count=1000)
        )
        for stream in streams:
            if not client.exists(stream):
                continue
            # Scan newest first: a traced event is usually recent.
            last = "+"
            while True:
                page = client.xrevrange(stream, max=last, min="-", count=1000)
                if not page:
                    break
                for entry_id, fields in page:
                    if fields.get(b"ce_id", b"").decode() == event_id:
                        entry = entry_id.decode()
                        ms = int(entry.split("-", 1)[0])
                        at = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
                        groups = _redis_groups_past(client, stream, entry)
                        details = {
                            "destination": stream,
                            "type": fields.get(b"ce_type", b"").decode() or None,
                            "entry": entry,
                        }
                        return at, f"redis stream {stream}", details, groups
                oldest = page[-1][0].decode()
                ms, seq = (int(x) for x in oldest.split("-"))
                last = f"{ms}-{seq - 1}" if seq else f"{ms - 1}-18446744073709551615"
                if ms == 0 and seq == 0:
                    break
    except redis.RedisError as exc:
        raise TraceError(f"--router {masked_url(router_url)}: {exc}") from None
    finally:
        client.close()
    return None


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _redis_groups_past(client, stream: str, entry: str) -> list[str]:
    """Groups that were handed the entry and no longer have it pending (acknowledged)."""

    def key(entry_id: str) -> tuple[int, int]:
        ms, seq = entry_id.split("-")
        return int(ms), int(seq)

    out = []
    for group in client.xinfo_groups(stream):
        name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
        last = group["last-delivered-id"]
        last = last.decode() if isinstance(last, bytes) else last
        if key(last) < key(entry):
            continue
        pending = client.xpending_range(stream, name, min=entry, max=entry, count=1)
        if not pending:
            out.append(name)
    return out
