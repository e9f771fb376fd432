"""The event envelope: CloudEvents 1.0 attributes, shared by emit, the relay and consumers.

An ``Envelope`` is what travels: routable attributes in the clear, ``data`` as
bytes whose meaning ``datacontenttype`` gives (``application/json``, or
``application/jose+json`` when encrypted). Routers map it onto their protocol's
CloudEvents binding; ``to_structured`` / ``from_structured`` is the JSON event
format for protocols without headers.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import re
from typing import Any, Mapping

SPECVERSION = "1.0"
JSON_CONTENT_TYPE = "application/json"
JOSE_CONTENT_TYPE = "application/jose+json"

#: CloudEvents extension attributes strangler sets, beside the core ones.
EXTENSIONS = ("aggregatetype", "partitionkey", "traceparent")

_CORE_REQUIRED = ("specversion", "id", "source", "type")
_ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]{1,20}$")
#: Names known to be valid, so the common case skips the pattern.
_KNOWN_NAMES = frozenset(
    ("specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema", *EXTENSIONS,
     "tracestate")
)
_UTC = dt.timezone.utc


class EnvelopeError(ValueError):
    """An event does not satisfy the CloudEvents 1.0 envelope."""


def format_time(value: dt.datetime) -> str:
    """Return ``value`` as an RFC 3339 UTC timestamp (``Z`` suffix, microseconds)."""
    offset = value.utcoffset()
    if offset is None:
        raise EnvelopeError("event time must be timezone-aware")
    if offset:
        value = value.astimezone(_UTC)
    # isoformat is several times cheaper than strftime; with a zero offset it ends in "+00:00".
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


def parse_time(text: str) -> dt.datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise EnvelopeError(f"time {text!r} is not RFC 3339") from exc
    if value.tzinfo is None:
        raise EnvelopeError(f"time {text!r} has no UTC offset")
    return value.astimezone(dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class Envelope:
    """One CloudEvent as strangler publishes it."""

    id: str
    source: str
    type: str
    subject: str
    time: dt.datetime
    data: bytes
    datacontenttype: str = JSON_CONTENT_TYPE
    aggregatetype: str = ""
    partitionkey: str = ""
    traceparent: str | None = None
    tracestate: str | None = None
    specversion: str = SPECVERSION

    #: The context attributes as strings, computed once (routers map them onto every message).
    _attributes: dict[str, str] = dataclasses.field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self):
        attrs = self._compute_attributes()
        # The names are this class's own: only the values need checking (join fails on a non-string).
        try:
            valid = bool(self.id and self.source and self.type and self.specversion) and bool("".join(attrs.values()))
        except TypeError:
            valid = False
        if not valid:
            validate_attributes(attrs)  # raises, naming the attribute
        if not isinstance(self.data, (bytes, bytearray)):
            raise EnvelopeError("event data must be bytes")
        object.__setattr__(self, "_attributes", attrs)

    def with_data(self, data: bytes, datacontenttype: str) -> "Envelope":
        """Return a copy of this event carrying ``data`` of ``datacontenttype`` (the relay seals with it).

        The other attributes were checked when this envelope was built; only the
        new values are checked here. ``dataclasses.replace`` builds and checks the
        whole event again: 6 µs per event, a seventh of what ``encrypt_at =
        "relay"`` costs the relay for each event it seals.
        """
        if not isinstance(data, (bytes, bytearray)):
            raise EnvelopeError("event data must be bytes")
        if not isinstance(datacontenttype, str) or not datacontenttype:
            raise EnvelopeError("CloudEvent attribute 'datacontenttype' must be a non-empty string here")
        attrs = dict(self._attributes)
        attrs["datacontenttype"] = datacontenttype
        fields = dict(self.__dict__)
        fields.update(data=data, datacontenttype=datacontenttype, _attributes=attrs)
        copy = object.__new__(type(self))
        object.__setattr__(copy, "__dict__", fields)
        return copy

    @property
    def encrypted(self) -> bool:
        """True when ``data`` is a JWE rather than plain JSON."""
        return self.datacontenttype == JOSE_CONTENT_TYPE

    def attributes(self) -> dict[str, str]:
        """Return the context attributes as strings (no data), unset extensions left out."""
        return dict(self._attributes)

    def attribute_items(self):
        """The context attributes as a read-only view of (name, value) pairs: no copy, for routers."""
        return self._attributes.items()

    def _compute_attributes(self) -> dict[str, str]:
        attrs = {"specversion": self.specversion, "id": self.id, "source": self.source, "type": self.type}
        if self.subject:
            attrs["subject"] = self.subject
        attrs["time"] = format_time(self.time)
        if self.datacontenttype:
            attrs["datacontenttype"] = self.datacontenttype
        if self.aggregatetype:
            attrs["aggregatetype"] = self.aggregatetype
        if self.partitionkey:
            attrs["partitionkey"] = self.partitionkey
        if self.traceparent:
            attrs["traceparent"] = self.traceparent
        if self.tracestate:
            attrs["tracestate"] = self.tracestate
        return attrs

    @classmethod
    def from_attributes(cls, attrs: Mapping[str, str], data: bytes) -> "Envelope":
        """Build an envelope from context attributes (as read from headers) and data bytes."""
        validate_attributes(attrs)
        if attrs.get("specversion") != SPECVERSION:
            raise EnvelopeError(f"specversion {attrs.get('specversion')!r} is not {SPECVERSION}")
        return cls(
            id=attrs["id"],
            source=attrs["source"],
            type=attrs["type"],
            subject=attrs.get("subject", ""),
            time=parse_time(attrs["time"]) if attrs.get("time") else _epoch(),
            data=bytes(data),
            datacontenttype=attrs.get("datacontenttype", JSON_CONTENT_TYPE),
            aggregatetype=attrs.get("aggregatetype", ""),
            partitionkey=attrs.get("partitionkey", ""),
            traceparent=attrs.get("traceparent"),
            tracestate=attrs.get("tracestate"),
        )

    @classmethod
    def from_row(cls, row: Any) -> "Envelope":
        """Build the envelope of an outbox row (a Row or mapping with the table's columns)."""
        m = row._mapping if hasattr(row, "_mapping") else row
        return cls.from_columns(m["id"], m["source"], m["type"], m["aggregatetype"], m["aggregateid"],
                                m["timestamp"], m["payload"], m["content_type"], m.get("tracingspancontext"))

    @classmethod
    def from_columns(cls, id: str, source: str, type: str, aggregatetype: str, aggregateid: str,
                     timestamp: dt.datetime, payload: bytes | None, content_type: str,
                     tracingspancontext: str | None) -> "Envelope":
        """Build the envelope of an outbox row from its columns (the relay's claim reads tuples).

        The relay builds one per row it publishes, so this skips the frozen
        dataclass's ``__init__``, which sets the twelve fields one guarded call
        at a time (a third of the cost), and fills them in one step; the checks
        of ``__post_init__`` run as they do for any envelope.
        """
        traceparent, tracestate = _split_span_context(tracingspancontext)
        envelope = object.__new__(cls)
        object.__setattr__(envelope, "__dict__", {
            "id": id, "source": source, "type": type, "subject": aggregateid, "time": timestamp,
            "data": payload if isinstance(payload, bytes) else bytes(payload or b""),
            "datacontenttype": content_type, "aggregatetype": aggregatetype, "partitionkey": aggregateid,
            "traceparent": traceparent, "tracestate": tracestate, "specversion": SPECVERSION,
        })
        envelope.__post_init__()
        return envelope

    def to_structured(self) -> dict[str, Any]:
        """Return the CloudEvents JSON event format of this event.

        JSON data is embedded as ``data`` (a JSON value); anything else,
        including a JWE and data declared JSON that does not parse, travels as
        ``data_base64`` so the bytes arrive exactly.
        """
        doc: dict[str, Any] = dict(self.attributes())
        if self.datacontenttype == JSON_CONTENT_TYPE and _json_value(self.data):
            doc["data"] = json.loads(self.data) if self.data else None
        else:
            doc["data_base64"] = base64.b64encode(self.data).decode("ascii")
        return doc

    def to_json(self) -> bytes:
        """Return the structured form as compact UTF-8 JSON bytes, on one line.

        The same document as ``to_structured``, built without re-encoding the
        data: JSON data is spliced in as it is (after a check that it parses and
        holds no line break), other bytes as their base64. Data declared JSON that
        does not parse travels as ``data_base64``, so its bytes arrive exactly
        and the consumer, not the relay, rejects it.
        """
        head = json.dumps(self._attributes, separators=(",", ":"), ensure_ascii=False).encode()
        if self.datacontenttype == JSON_CONTENT_TYPE and _json_text(self.data):
            member = b',"data":' + (bytes(self.data) if self.data else b"null")
        elif self.datacontenttype == JSON_CONTENT_TYPE and _json_value(self.data):
            member = b',"data":' + json.dumps(json.loads(self.data), separators=(",", ":"), ensure_ascii=False).encode()
        else:
            member = b',"data_base64":"' + base64.b64encode(self.data) + b'"'
        return head[:-1] + member + b"}"

    @classmethod
    def from_structured(cls, doc: Mapping[str, Any]) -> "Envelope":
        """Parse the CloudEvents JSON event format written by ``to_structured``."""
        if "data_base64" in doc:
            data = base64.b64decode(doc["data_base64"])
        elif doc.get("data") is not None:
            data = json.dumps(doc["data"], separators=(",", ":"), ensure_ascii=False).encode()
        else:
            data = b""
        attrs = {k: v for k, v in doc.items() if k not in ("data", "data_base64")}
        return cls.from_attributes(attrs, data)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "Envelope":
        """Parse structured-mode JSON bytes."""
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise EnvelopeError(f"not a JSON CloudEvent: {exc}") from exc
        if not isinstance(doc, dict):
            raise EnvelopeError("not a JSON CloudEvent: the top level is not an object")
        return cls.from_structured(doc)


def _json_value(data: bytes) -> bool:
    """True when ``data`` is one JSON value (empty data counts: it is written as null)."""
    if not data:
        return True
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def _json_text(data: bytes) -> bool:
    """True when ``data`` can be spliced into a JSON line as it is: one JSON value, no line break."""
    return b"\n" not in data and b"\r" not in data and _json_value(data)


def validate_attributes(attrs: Mapping[str, Any]) -> None:
    """Raise ``EnvelopeError`` unless ``attrs`` are valid CloudEvents 1.0 context attributes."""
    for name in _CORE_REQUIRED:
        if not attrs.get(name):
            raise EnvelopeError(f"CloudEvent attribute {name!r} is required and must not be empty")
    for name, value in attrs.items():
        if name not in _KNOWN_NAMES and not _ATTRIBUTE_NAME.match(name):
            raise EnvelopeError(
                f"CloudEvent attribute name {name!r} must be 1-20 lowercase letters or digits"
            )
        if not isinstance(value, str):
            raise EnvelopeError(f"CloudEvent attribute {name!r} must be a string here")


def _split_span_context(value: str | None) -> tuple[str | None, str | None]:
    # Stored as "traceparent" or "traceparent;tracestate" (tracestate may hold commas).
    if not value:
        return None, None
    parent, _, state = value.partition(";")
    return parent or None, state or None


def join_span_context(traceparent: str | None, tracestate: str | None) -> str | None:
    """Return the ``tracingspancontext`` column value for a W3C trace context."""
    if not traceparent:
        return None
    return f"{traceparent};{tracestate}" if tracestate else traceparent


def _epoch() -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
