"""``redis://`` and ``rediss://`` router: Redis Streams, one stream per destination.

Redis Streams has no CloudEvents binding, so each entry holds one field per
context attribute with a ``ce_`` prefix (``ce_id``, ``ce_type``, …,
``ce_datacontenttype``) plus ``data`` (the bytes as emitted). A batch is one
pipeline of ``XADD`` commands: one round trip, and an entry is reported
published only once Redis replied with its id (with ``appendfsync always``
that reply also means it is on disk). The router packs the commands itself
(``pack_event``) and sends them on a connection of redis-py's pool: redis-py's
general packer costs about 15 µs for a twelve-field entry, more than the rest
of the relay's work on an event; the replies are read by redis-py. ``maxlen`` caps each stream
(approximately, ``MAXLEN ~``); by default streams are not trimmed.

Options (keyword or URL query): ``maxlen``, ``max_bytes`` (default 64 MiB),
``ca_file``, ``cert_file``, ``key_file`` (TLS, with ``rediss://``).

Ephemeral subscriptions (``open_subscription(..., ephemeral=True)``, what
``strangler events tail`` opens) create no group: ``XREAD`` from the start of
each stream, with the read position kept in the process (``EphemeralRedisSubscription``),
so nothing is left on Redis however the process ends.

Consumer side: a consumer group per service (``XREADGROUP``), created at the
start of the stream so nothing published before the first subscribe is missed;
``ack`` is ``XACK``. Each subscription is a consumer of its own in the group
(``default_consumer_name``), so it re-reads only the entries it was given: after
``nack`` all of them, in order, before any new one. A process starting first
adopts what dead members left unacked (``_adopt_orphans``); any entry left
unacked for ``claim_idle`` is taken over by a live process (``XAUTOCLAIM``).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Sequence

from ..envelope import Envelope
from .base import NOT_A_CLOUDEVENT, Delivery, Destinations, PublishResult, RouterError, raw_message
from .common import TLS_OPTIONS, KeyGate, as_int, masked_url, require, split_options, too_large

OPTIONS = ("maxlen", "max_bytes", "consumer", "claim_idle", *TLS_OPTIONS)
#: Seconds an entry may wait unacked before another process of the group takes it over.
DEFAULT_CLAIM_IDLE = 60.0
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: Seconds a group member must have gone without reading or claiming (its ``idle`` in ``XINFO CONSUMERS``),
#: on top of having no connection named after it, to count as dead. A live member reads at every receive
#: (each receive timeout), so its idle stays well below this even when its connection has just dropped.
ADOPT_AFTER = 5.0
#: Added to a wait for a member to age: Redis counts idle in whole milliseconds.
_AGE_MARGIN = 0.01
#: Pending entries looked at per XPENDING when a subscription closes.
_RELEASE_PAGE = 1000
PREFIX = "ce_"
#: Replies that mean "not now" rather than "never".
_TRANSIENT_REPLIES = ("OOM", "LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def _client(url: str, opts: dict):
    """Return (the redis module, a client for ``url``), after checking the URL's options.

    The check is here as well as in the router because the watch opens its
    reader through this function with the router URL as configured; an option
    left in the URL would reach redis-py as an unexpected keyword argument.
    """
    url, opts = split_options(url, opts, OPTIONS)
    redis = require("redis", "redis", url.split(":", 1)[0])
    kwargs = {"socket_timeout": 10, "socket_connect_timeout": 5}
    if url.startswith("rediss://"):
        if opts.get("ca_file"):
            kwargs["ssl_ca_certs"] = opts["ca_file"]
        if opts.get("cert_file"):
            kwargs["ssl_certfile"] = opts["cert_file"]
        if opts.get("key_file"):
            kwargs["ssl_keyfile"] = opts["key_file"]
    elif any(opts.get(name) for name in TLS_OPTIONS):
        raise RouterError(f"{masked_url(url)}: TLS options need a rediss:// URL")
    try:
        return redis, redis.Redis.from_url(url, **kwargs)
    except ValueError as exc:
        raise RouterError(f"{masked_url(url)}: not a Redis URL ({exc}); e.g. redis://127.0.0.1:6379/0") from exc


def default_consumer_name() -> str:
    """Return a consumer name no other subscription has: ``<host>-<pid>-<random>``.

    Processes of a service sharing one name would share one pending list: a
    process starting, or nacking, would read its siblings' entries in flight
    again and handle them a second time while they still do. Host and pid
    keep the name readable in ``XINFO CONSUMERS``; the random part tells apart
    two subscriptions of one process, and a pid reused after a restart. Only
    the host's first label is kept (a pod's name; the domain adds nothing).
    """
    host = socket.gethostname().split(".", 1)[0][:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def pack_event(stream: str, event: Envelope, maxlen: int | None = None) -> bytes:
    """Return the RESP bytes of the ``XADD`` of ``event``'s stream entry (what ``entry_fields`` holds)."""
    name = stream.encode()
    items = event.attribute_items()
    trim = b"$6\r\nMAXLEN\r\n$1\r\n~\r\n$%d\r\n%d\r\n" % (len(str(maxlen)), maxlen) if maxlen is not None else b""
    parts = [b"*%d\r\n$4\r\nXADD\r\n$%d\r\n%b\r\n%b$1\r\n*\r\n"
             % (5 + 2 * len(items) + (3 if trim else 0), len(name), name, trim)]
    headers = _FIELD_HEADERS
    for attribute, value in items:
        encoded = value.encode()
        parts.append(b"%b$%d\r\n%b\r\n" % (headers.get(attribute) or _field_header(attribute), len(encoded), encoded))
    data = bytes(event.data)
    parts.append(b"$4\r\ndata\r\n$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def _field_header(attribute: str) -> bytes:
    """The RESP bulk string of the field name ``ce_<attribute>``, made once per name."""
    header = _FIELD_HEADERS.get(attribute)
    if header is None:
        field = (PREFIX + attribute).encode()
        header = _FIELD_HEADERS[attribute] = b"$%d\r\n%b\r\n" % (len(field), field)
    return header


_FIELD_HEADERS: dict[str, bytes] = {}


def entry_fields(event: Envelope) -> dict[str, bytes | str]:
    """Return the stream entry of ``event``: ``ce_<attribute>`` fields and ``data``."""
    fields: dict[str, bytes | str] = {PREFIX + name: value for name, value in event.attribute_items()}
    fields["data"] = event.data
    return fields


def envelope_of(fields: dict[bytes, bytes]) -> Envelope:
    """Rebuild the envelope of a stream entry written by ``entry_fields``."""
    attrs = {}
    data = b""
    for key, value in fields.items():
        name = key.decode()
        if name == "data":
            data = value
        elif name.startswith(PREFIX):
            attrs[name[len(PREFIX):]] = value.decode()
    return Envelope.from_attributes(attrs, data)


def _raw_entry(fields: dict[bytes, bytes]) -> bytes:
    """What a dead letter keeps of an entry that is not a CloudEvent: its other fields, then ``data``."""
    headers = {key: value for key, value in fields.items() if key != b"data"}
    return raw_message(headers, fields.get(b"data", b""))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisRouter:
    """Appends events to Redis Streams with one pipelined round trip per batch."""

    #: ``open_subscription(..., ephemeral=True)`` reads with ``XREAD``: no group is created at all.
    EPHEMERAL_GROUPS = True

    def __init__(self, url: str, *, destinations: Destinations | None = None, **options):
        self.url, opts = split_options(url, options, OPTIONS)
        self.destinations = destinations or Destinations()
        self.maxlen = as_int(opts["maxlen"], "maxlen", url) if opts.get("maxlen") else None
        self.max_bytes = as_int(opts.get("max_bytes", DEFAULT_MAX_BYTES), "max_bytes", url)
        self.redis, self.client = _client(self.url, opts)
        self._closed = False

    def publish(self, batch: Sequence[Envelope]) -> list[PublishResult]:
        """XADD every event in one pipeline; ok once Redis returned the entry id."""
        results: list[PublishResult | None] = [None] * len(batch)
        commands: list[bytes] = []
        queued: list[int] = []
        gate = KeyGate()
        for index, event in enumerate(batch):
            held = gate.held(event)
            if held is not None:
                results[index] = held
                continue
            command = pack_event(self.destinations.for_event(event), event, self.maxlen)
            if len(command) > self.max_bytes:
                results[index] = gate.fail(event, too_large(event.id, len(command), self.max_bytes, "redis"))
                continue
            commands.append(command)
            queued.append(index)
        if queued:
            self._send(batch, queued, commands, results)
        return results  # type: ignore[return-value]

    def _send(self, batch, queued: list[int], commands: list[bytes], results: list) -> None:
        """Write the packed commands in one go, then read one reply per command, in order."""
        redis = self.redis
        pool = self.client.connection_pool
        read = 0
        try:
            connection = pool.get_connection()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            for index in queued:
                results[index] = PublishResult(batch[index].id, f"redis unreachable: {exc}")
            return
        try:
            connection.send_packed_command([b"".join(commands)])  # one write for the batch
            for index in queued:
                try:
                    connection.read_response()
                    results[index] = PublishResult(batch[index].id)
                except redis.ResponseError as reply:
                    text = str(reply)
                    transient = text.split(" ", 1)[0] in _TRANSIENT_REPLIES
                    results[index] = PublishResult(batch[index].id, f"redis refused XADD: {text}", not transient)
                read += 1
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            # Replies not read are unknown: reported transient, the relay publishes them again.
            connection.disconnect()
            for index in queued[read:]:
                results[index] = PublishResult(batch[index].id, f"redis unreachable: {exc}")
        finally:
            pool.release(connection)

    def close(self) -> None:
        """Close the connection pool; safe twice."""
        if not self._closed:
            self._closed = True
            self.client.close()

    @classmethod
    def subscribe(cls, url: str, *, group: str, destinations: list[str], ephemeral: bool = False,
                  **options) -> RedisSubscription | EphemeralRedisSubscription:
        """Read ``destinations`` (streams) as consumer group ``group``; ``ephemeral``: as a reader of its own."""
        if ephemeral:
            return EphemeralRedisSubscription(url, group, destinations, **options)
        return RedisSubscription(url, group, destinations, **options)


#: Delete a group member only if it holds no pending entry: KEYS[1] stream, ARGV group, name.
_DELETE_IF_EMPTY = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""


def _script_refused(exc: Exception) -> bool:
    """Whether Redis refused to run a script at all (ACL, disabled command), not failed inside one."""
    text = str(exc)
    return "NOPERM" in text or "unknown command" in text or "no permissions" in text


class RedisSubscription:
    """A Redis Streams consumer group member; ``ack`` is XACK."""

    def __init__(self, url: str, group: str, destinations: list[str], **options):
        if not destinations:
            raise RouterError(f"{masked_url(url)}: name at least one destination (stream) to read")
        self.url, opts = split_options(url, options, OPTIONS)
        self.consumer = opts.get("consumer") or default_consumer_name()
        self.claim_idle = float(opts.get("claim_idle", DEFAULT_CLAIM_IDLE))
        if self.claim_idle <= 0 and not opts.get("consumer"):
            # Unclaimed, a process's unacked entries are read again only under its own name,
            # and a default name is never used twice: they would stay pending for ever.
            raise RouterError(f"{masked_url(url)}: claim_idle=0 needs a fixed consumer name (consumer=...)")
        self.redis, self.client = _client(self.url, opts)
        # Every connection of this subscription carries its consumer name (CLIENT SETNAME), so a
        # process starting can tell a member of the group that is alive from one that died.
        self.client.connection_pool.connection_kwargs["client_name"] = self.consumer
        self._adopted = False
        #: Per stream, where the next XAUTOCLAIM goes on scanning the pending list.
        self._claim_from: dict[str, str] = {}
        #: Which stream the next XAUTOCLAIM round starts with; it moves on each round.
        self._claim_turn = 0
        self.group = group
        # The first receive already looks for entries left long enough by a dead process:
        # a process starting has no pending list of its own to pick them up from.
        self._next_claim = time.monotonic()
        #: Set by ``close``; also ends the first receive's wait for a member to age.
        self._closed = threading.Event()
        self.streams = list(destinations)
        for stream in self.streams:
            try:
                self.client.xgroup_create(stream, group, id="0", mkstream=True)
            except self.redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise RouterError(f"{masked_url(url)}: cannot create group {group!r} on {stream!r}: {exc}") from exc
            except self.redis.ConnectionError as exc:
                raise RouterError(f"{masked_url(url)}: redis unreachable: {exc}") from exc
        #: Per stream, the id after which this consumer's unacked entries are read next; None once
        #: they are all read again (at first those of an earlier run under a fixed ``consumer`` name).
        self._pending_after: dict[str, str] | None = {s: "0" for s in self.streams}

    def receive(self, max_events: int = 100, timeout: float = 1.0) -> list[Delivery]:
        """Return up to ``max_events`` entries: every unacked one of this consumer first, in order.

        The first receive adopts what dead members of the group left unacked
        (``_adopt_orphans``), so those come first too.
        """
        if not self._adopted:
            self._adopt_orphans()
            self._adopted = True
            if self._closed.is_set():
                return []  # closed while it waited: a read now would add the name to the group again
        while self._pending_after is not None:
            replies = self.client.xreadgroup(self.group, self.consumer, dict(self._pending_after),
                                             count=max_events)
            read = False
            for stream, entries in replies or []:
                if entries:
                    name = stream.decode() if isinstance(stream, bytes) else stream
                    last = entries[-1][0]
                    self._pending_after[name] = last.decode() if isinstance(last, bytes) else last
                    read = True
            if not read:
                self._pending_after = None  # all read again: new entries from now on
                break
            out = self._deliveries(replies, redelivered=True)
            if out:
                return out
        if self.claim_idle > 0 and time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + self.claim_idle
            out = self._claim_idle(max_events)
            self._tidy_group(adopt=False)
            if out:
                return out
        replies = self.client.xreadgroup(
            self.group, self.consumer, {s: ">" for s in self.streams}, count=max_events,
            block=max(1, int(timeout * 1000)),
        )
        return self._deliveries(replies, redelivered=False)

    def _adopt_orphans(self) -> None:
        """Take over the unacked entries of group members that died; remove dead members from the group.

        A process starting has a new consumer name, so it would not re-read
        what the process before it held: those entries would wait ``claim_idle``
        while newer events of their aggregates were handled, and one consumer
        process per group would lose per-aggregate order across a crash. A
        member is dead when no connection carries its name (``CLIENT LIST``;
        every subscription names its connections) and it has not read or
        claimed for ``ADOPT_AFTER`` seconds (its ``idle``): a live member whose
        connection dropped, or one of an older version whose connections have
        no name, reads again within a receive timeout. (From Redis 7.2 any read
        resets ``idle``; before, only one that returns entries.) A candidate
        holding entries but not idle long enough yet (a process that crashed
        just now) is waited for, once and at most until it would be, then
        looked at again; so the next process still reads its predecessor's
        entries first, while a member that polls meanwhile keeps its entries.
        Where ``CLIENT LIST`` is not allowed (an ACL, a managed Redis),
        ``claim_idle`` alone brings them back.
        """
        wait = self._tidy_group(adopt=True)
        if wait > 0 and not self._closed.wait(wait + _AGE_MARGIN):
            self._tidy_group(adopt=True)

    def _tidy_group(self, *, adopt: bool) -> float:
        """Remove the group's dead members, first moving their pending entries here if ``adopt``.

        Return how long until the youngest candidate holding entries (no named
        connection, idle less than ``ADOPT_AFTER``) would count as dead; 0 if
        there is none. Without ``adopt`` (each claim round) only dead members
        holding nothing are removed, so names left by processes killed while
        idle, drained by ``XAUTOCLAIM`` or left by a reopen after an outage do
        not pile up. ``CLIENT LIST`` (a cost with many clients) is asked only
        when some member could be dead.
        """
        after_ms = int(ADOPT_AFTER * 1000)
        candidates = {
            stream: [(name, pending, idle) for name, pending, idle in self._members(stream)
                     if name != self.consumer and ((adopt and pending) or (not pending and idle >= after_ms))]
            for stream in self.streams
        }
        if not any(candidates.values()):
            return 0.0
        live = self._live_names()
        if live is None:
            return 0.0
        wait = 0.0
        dead: dict[str, set[str]] = {}
        for stream, members in candidates.items():
            for name, pending, idle in members:
                if name in live:
                    continue
                if idle < after_ms:  # only a member holding entries is a candidate this young
                    wait = max(wait, (after_ms - idle) / 1000)
                    continue
                if pending:
                    self._take_over(stream, name)
                dead.setdefault(stream, set()).add(name)
        if dead:
            self._remove(dead)
        return wait

    def _members(self, stream: str) -> list[tuple[str, int, int]]:
        """(name, entries pending, ms idle) of each consumer of the group on ``stream``."""
        try:
            members = self.client.xinfo_consumers(stream, self.group)
        except self.redis.ResponseError:
            return []  # the stream or group went away meanwhile
        return [(_text(member["name"]), member["pending"], member["idle"]) for member in members]

    def _live_names(self) -> set[str] | None:
        """The names connections to Redis carry now; None where ``CLIENT LIST`` is not allowed."""
        try:
            return {client.get("name") for client in self.client.client_list(_type="normal")}
        except self.redis.ResponseError:  # NoPermissionError too
            return None

    def _take_over(self, stream: str, dead: str) -> None:
        """Move here the entries ``dead`` holds on ``stream`` that nobody touched for ``ADOPT_AFTER``.

        The minimum idle time of ``XCLAIM`` leaves alone an entry its owner
        read again lately (it was alive after all), and one that a process
        starting at the same moment has just claimed (a claim resets an
        entry's idle): two processes starting at once never both take an entry.
        """
        start = "-"
        try:
            while True:
                pending = self.client.xpending_range(stream, self.group, start, "+", _RELEASE_PAGE, consumername=dead)
                if not pending:
                    return
                ids = [entry["message_id"] for entry in pending]
                self.client.xclaim(stream, self.group, self.consumer, int(ADOPT_AFTER * 1000), ids, justid=True)
                start = "(" + _text(ids[-1])
        except self.redis.ResponseError:
            return  # the stream or group went away meanwhile

    def _remove(self, dead: dict[str, set[str]]) -> None:
        """Delete the members ``dead`` lists per stream that still hold nothing, idle and unconnected.

        ``XGROUP DELCONSUMER`` drops a consumer's pending entries with it, so
        each is looked at again right before: a member holding entries again
        (a fixed ``consumer`` name reopened, reading its own) or reading again
        stays. The last look and the delete are one script, so no entry can
        become pending between them. A member with nothing pending deleted
        while alive is harmless: its next read adds it again.
        """
        after_ms = int(ADOPT_AFTER * 1000)
        live = self._live_names()
        if live is None:
            return
        for stream, names in dead.items():
            try:
                for name, pending, idle in self._members(stream):
                    if name in names and not pending and idle >= after_ms and name not in live:
                        self._delete_if_empty(stream, name)
            except self.redis.ResponseError:
                continue  # the stream or group went away meanwhile

    def _delete_if_empty(self, stream: str, name: str) -> None:
        """``XGROUP DELCONSUMER`` ``name`` if it holds no entry at that moment (one script: atomic).

        Where scripts are refused (an ACL, a managed Redis that forbids
        ``EVAL``) the check and the delete are two commands, a round trip apart.
        """
        try:
            self.client.eval(_DELETE_IF_EMPTY, 1, stream, self.group, name)
        except self.redis.ResponseError as exc:
            if not _script_refused(exc):
                raise
            if not self.client.xpending_range(stream, self.group, "-", "+", 1, consumername=name):
                self.client.xgroup_delconsumer(stream, self.group, name)

    def _claim_idle(self, max_events: int) -> list[Delivery]:
        """Take over the group's entries left unacked for ``claim_idle`` seconds (``XAUTOCLAIM``).

        A process killed while handling leaves its entry pending under its own
        consumer name, which no process takes again (unless the name is a fixed
        ``consumer``): unclaimed, it would wait for ever. Claimed, it is
        delivered again here (the inbox makes a second handling harmless,
        should its owner have been slow, not dead).
        """
        out: list[Delivery] = []
        # Each round starts with the next stream: a round ends once it has max_events, and a stream
        # always first would keep later streams' idle entries waiting while it has enough of its own.
        turn = self._claim_turn % len(self.streams)
        self._claim_turn = turn + 1
        for stream in self.streams[turn:] + self.streams[:turn]:
            # XAUTOCLAIM looks at a bounded stretch of the pending list per call (ten times COUNT): go
            # on from where the last call stopped, or idle entries behind a long stretch of entries
            # live members hold would never be reached. Its cursor is 0-0 again after the end.
            reply = self.client.xautoclaim(stream, self.group, self.consumer, int(self.claim_idle * 1000),
                                           start_id=self._claim_from.get(stream, "0-0"),
                                           count=max_events - len(out))
            self._claim_from[stream] = _text(reply[0])
            out += self._deliveries([(stream, reply[1])], redelivered=True)
            if len(out) >= max_events:
                break
        return out

    def _deliveries(self, replies, *, redelivered: bool) -> list[Delivery]:
        out = []
        for stream, entries in replies or []:
            stream = stream.decode() if isinstance(stream, bytes) else stream
            for entry_id, fields in entries:
                if not fields:  # trimmed away while pending
                    self.client.xack(stream, self.group, entry_id)
                    continue
                ack = lambda s=stream, i=entry_id: self.client.xack(s, self.group, i)  # noqa: E731
                try:
                    envelope = envelope_of(fields)
                except NOT_A_CLOUDEVENT as exc:
                    out.append(Delivery.unreadable(
                        _raw_entry(fields), exc, stream, location=f"stream {stream} entry {_text(entry_id)}",
                        ack=ack, nack=self._nack, redelivered=redelivered,
                    ))
                    continue
                out.append(Delivery(envelope=envelope, destination=stream, redelivered=redelivered,
                                    _ack=ack, _nack=self._nack))
        return out

    def _nack(self) -> None:
        self._pending_after = {s: "0" for s in self.streams}

    def close(self) -> None:
        """Leave the group, or hand this consumer's unacked entries to the next claim; close. Safe twice.

        Unacked entries stay pending under this consumer's name; they are
        marked idle for ``claim_idle``, so the next claim of a process of the
        group (a starting one's first receive) delivers them again at once,
        and a process starting within ``ADOPT_AFTER`` adopts them once this
        name has aged. A fixed ``consumer`` name reopened reads them again
        itself. Also ends a first receive's wait for a member to age.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            for stream in self.streams:
                self._release(stream)
        except (self.redis.RedisError, OSError):
            pass  # broker unreachable: the name stays (harmless) and the entries wait for claim_idle
        finally:
            self.client.close()

    def _release(self, stream: str) -> None:
        """Remove this consumer from ``stream``'s group if nothing is pending for it there, else mark that idle.

        Each process start adds a consumer name; without this the group would
        list every process that ever ran. ``XGROUP DELCONSUMER`` drops the
        consumer's pending entries with it, so it runs only after ``XPENDING``
        found none: nothing can become pending for this name in between, as
        only this subscription reads and claims under it.
        """
        idle_ms = int(self.claim_idle * 1000)
        start = "-"
        try:
            while True:
                pending = self.client.xpending_range(stream, self.group, start, "+", _RELEASE_PAGE,
                                                     consumername=self.consumer)
                if not pending and start == "-":
                    self.client.xgroup_delconsumer(stream, self.group, self.consumer)
                    return
                if not pending or idle_ms <= 0:
                    return  # with claim_idle 0 nobody claims: they wait for this fixed name to reopen
                ids = [entry["message_id"] for entry in pending]
                # JUSTID: handing back is not a delivery, the entries' delivery counts stay as they are.
                self.client.xclaim(stream, self.group, self.consumer, 0, ids, idle=idle_ms, justid=True)
                start = "(" + _text(ids[-1])
        except self.redis.ResponseError:
            return  # stream or group deleted meanwhile: nothing to leave


def _entry_id(value: bytes | str) -> tuple[int, int]:
    """A stream entry id as (milliseconds, sequence), for comparing ids."""
    ms, _, seq = _text(value).partition("-")
    return int(ms), int(seq or 0)


class EphemeralRedisSubscription:
    """An ephemeral group: ``XREAD`` from the start of each stream, the position kept in this process only.

    Nothing is created on Redis (no group, no consumer, no stream: a stream
    that does not exist yet reads as empty until the relay adds to it), so a
    process killed while reading leaves nothing behind. ``ack`` changes
    nothing; ``nack`` moves the stream's position back before that entry, so it
    and every later one are read again.
    """

    def __init__(self, url: str, group: str, destinations: list[str], **options):
        if not destinations:
            raise RouterError(f"{masked_url(url)}: name at least one destination (stream) to read")
        self.url, opts = split_options(url, options, OPTIONS)
        self.redis, self.client = _client(self.url, opts)
        self.group = group
        self.streams = list(destinations)
        #: Per stream, the id after which the next XREAD reads; the highest id delivered so far.
        self.position: dict[str, str] = {s: "0-0" for s in self.streams}
        self._delivered: dict[str, tuple[int, int]] = {s: (0, 0) for s in self.streams}
        self._closed = False
        try:
            self.client.ping()
        except (self.redis.ConnectionError, self.redis.TimeoutError) as exc:
            self.client.close()
            raise RouterError(f"{masked_url(url)}: redis unreachable: {exc}") from exc

    def receive(self, max_events: int = 100, timeout: float = 1.0) -> list[Delivery]:
        """Return up to ``max_events`` entries after the streams' positions, waiting at most ``timeout``."""
        replies = self.client.xread(dict(self.position), count=max_events, block=max(1, int(timeout * 1000)))
        out: list[Delivery] = []
        for stream, entries in replies or []:
            stream = _text(stream)
            for entry_id, fields in entries:
                if len(out) >= max_events:
                    break
                previous, entry_id = self.position[stream], _text(entry_id)
                self.position[stream] = entry_id
                number = _entry_id(entry_id)
                redelivered = number <= self._delivered[stream]
                self._delivered[stream] = max(number, self._delivered[stream])
                nack = lambda s=stream, p=previous: self._rewind(s, p)  # noqa: E731
                try:
                    envelope = envelope_of(fields)
                except NOT_A_CLOUDEVENT as exc:
                    out.append(Delivery.unreadable(
                        _raw_entry(fields), exc, stream, location=f"stream {stream} entry {entry_id}",
                        ack=None, nack=nack, redelivered=redelivered,
                    ))
                    continue
                out.append(Delivery(envelope=envelope, destination=stream, redelivered=redelivered, _nack=nack))
        return out

    def _rewind(self, stream: str, position: str) -> None:
        if _entry_id(position) < _entry_id(self.position[stream]):
            self.position[stream] = position

    def close(self) -> None:
        """Close the connections; there is nothing on Redis to remove. Safe twice."""
        if not self._closed:
            self._closed = True
            self.client.close()
