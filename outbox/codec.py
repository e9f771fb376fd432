"""JSON encoding of event data that loses nothing JSON cannot hold natively.

The encoding, documented in ``docs/events.md``:

============  ==========================================  =======================
Python type   JSON form                                   example
============  ==========================================  =======================
Decimal       string, exact digits                        ``"19.90"``
datetime      RFC 3339 string (offset kept, naive stays   ``"2026-01-02T03:04:05.000006+00:00"``
              naive)
date          ISO 8601 date string                        ``"2026-01-02"``
time          ISO 8601 time string                        ``"03:04:05"``
UUID          canonical string                            ``"0191…"``
Enum          the member's value, encoded recursively     ``"paid"``
bytes         base64 (standard alphabet, padded) string   ``"AAEC"``
set/tuple     array                                       ``[1, 2]``
============  ==========================================  =======================

Strings carry exact values (a Decimal never passes through a float); a consumer
that knows the field's type restores it exactly.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import json
import uuid
from typing import Any


class UnserializableValue(TypeError):
    """A value has no JSON form; ``path`` names where it sits in the event data."""

    def __init__(self, path: str, value: Any):
        self.path = path
        self.value = value
        super().__init__(
            f"{path}: a value of type {type(value).__name__} cannot be written to an event; "
            "convert it to str/int/float/bool/None/list/dict, or to Decimal, datetime, date, "
            "time, UUID, Enum or bytes, which strangler encodes losslessly"
        )


def to_jsonable(value: Any, path: str = "data") -> Any:
    """Return ``value`` as plain JSON types, raising ``UnserializableValue`` with its path."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise UnserializableValue(path, value)
        return value
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, path)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise UnserializableValue(path, value)
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnserializableValue(f"{path}.{key!r} (key)", key)
            out[key] = to_jsonable(item, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_jsonable(item, f"{path}[{i}]") for i, item in enumerate(items)]
    raise UnserializableValue(path, value)


def dumps(value: Any, path: str = "data") -> bytes:
    """Encode ``value`` as compact UTF-8 JSON bytes."""
    return json.dumps(
        to_jsonable(value, path), separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def loads(raw: bytes | str) -> Any:
    """Decode JSON bytes written by ``dumps``."""
    return json.loads(raw)
