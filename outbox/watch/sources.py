"""What the watch reads besides the events: consumer groups as the broker reports them, and the outbox.

``group_lister(router_url, destinations)`` returns a function giving
``{destination: [group, …]}``:

* ``file://``: ``.groups/<group>/<destination>.offset`` — a group that has
  acknowledged at least one event of the destination (``events tail`` never
  acknowledges, so it never shows);
* ``redis://``: ``XINFO GROUPS`` of each destination stream;
* ``nats://``: the durable consumers of each destination's JetStream stream.

``OutboxLedger`` answers the gap rule from the outbox table.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable, Iterable, Mapping, Sequence

from sqlalchemy import and_, create_engine, select
from sqlalchemy.engine import Engine

from ..routers.base import Destinations
from ..table import DEFAULT_TABLE_NAME, get_outbox_table


class SourceError(Exception):
    """The broker or the outbox cannot be read as the watch needs; the message says what to fix."""


def group_lister(
    router_url: str, destinations: Sequence[str]
) -> Callable[[], Mapping[str, list[str]]] | None:
    """Return a function listing the consumer groups of ``destinations``, or None if the router cannot tell.

    A ``destination_prefix`` in the URL goes before each destination, as the
    relay publishes and the services read; the listing names them so, like
    the deliveries the watch observes.
    """
    from ..routers import split_destination_prefix

    router_url, prefix = split_destination_prefix(router_url)
    destinations = [prefix + d for d in destinations]
    scheme = router_url.split("://", 1)[0]
    if scheme == "file":
        return _file_groups(router_url, list(destinations))
    if scheme in ("redis", "rediss"):
        return _redis_groups(router_url, list(destinations))
    if scheme in ("nats", "tls", "nats+tls"):
        return _nats_groups(router_url, list(destinations))
    return None


def _file_groups(router_url: str, destinations: list[str]):
    from ..routers.file import _SAFE, folder_of

    groups_dir = folder_of(router_url) / ".groups"

    def listing() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {d: [] for d in destinations}
        if not groups_dir.is_dir():
            return out
        for group_dir in sorted(p for p in groups_dir.iterdir() if p.is_dir()):
            for destination in destinations:
                if (group_dir / (_SAFE.sub("_", destination) + ".offset")).exists():
                    out[destination].append(group_dir.name)
        return out

    return listing


def _redis_groups(router_url: str, destinations: list[str]):
    try:
        import redis
    except ImportError:
        raise SourceError(
            "listing Redis consumer groups needs the redis client: pip install 'strangler[redis]'"
        ) from None
    from ..routers import RouterError
    from ..routers.redis import _client

    try:
        _, client = _client(router_url, {})  # the router's own URL handling: options checked, TLS files
    except RouterError as exc:
        raise SourceError(str(exc)) from None

    def listing() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for destination in destinations:
            try:
                groups = client.xinfo_groups(destination)
            except redis.ResponseError:  # no such stream yet
                groups = []
            out[destination] = [
                g["name"].decode() if isinstance(g["name"], bytes) else g["name"] for g in groups
            ]
        return out

    listing.close = client.close  # type: ignore[attr-defined]
    return listing


def _nats_groups(router_url: str, destinations: list[str]):
    from ..routers.common import split_options
    from ..routers.nats import OPTIONS, _Client

    url, opts = split_options(router_url, {}, OPTIONS)
    client = _Client(url, opts)

    async def consumers() -> dict[str, list[str]]:
        js = await client.connect()
        out: dict[str, list[str]] = {}
        for destination in destinations:
            try:
                infos = await js.consumers_info(destination)
            except client.nats.js.errors.NotFoundError:  # no such stream yet
                infos = []
            out[destination] = [info.name for info in infos]
        return out

    def listing() -> dict[str, list[str]]:
        return client.loop.run(consumers(), timeout=30)

    listing.close = client.close  # type: ignore[attr-defined]
    return listing


class OutboxLedger:
    """The gap rule's view of an outbox table: what was published when, and which ids it holds."""

    def __init__(
        self,
        db: str | Engine,
        *,
        table_name: str = DEFAULT_TABLE_NAME,
        destinations: Iterable[str] = (),
        routing: Destinations | None = None,
    ):
        self.engine = create_engine(db) if isinstance(db, str) else db
        self._own = isinstance(db, str)
        self.table = get_outbox_table(table_name)
        self.routing = routing or Destinations()
        #: The watched destinations as the broker names them (with the routing's prefix).
        self.destinations = {self.routing.prefix + d for d in destinations}

    def _destination(self, aggregatetype: str, event_type: str) -> str:
        for pattern, name in self.routing.by_type.items():
            import fnmatch

            if fnmatch.fnmatchcase(event_type, pattern):
                return self.routing.prefix + name
        return self.routing.prefix + (aggregatetype or event_type.rsplit(".", 1)[0])

    def published_between(self, start: float, end: float) -> dict[str, tuple[str, float]]:
        """Return {event id: (destination, published at)} of rows marked published between ``start`` and ``end``."""
        t = self.table
        lo = dt.datetime.fromtimestamp(start, dt.timezone.utc)
        hi = dt.datetime.fromtimestamp(end, dt.timezone.utc)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.c.id, t.c.aggregatetype, t.c.type, t.c.published_at).where(
                    and_(
                        t.c.published_at.is_not(None),
                        t.c.published_at >= lo,
                        t.c.published_at <= hi,
                    )
                )
            ).all()
        return {
            row.id: (self._destination(row.aggregatetype, row.type), row.published_at.timestamp())
            for row in rows
        }

    def published_at(self, ids: Sequence[str]) -> dict[str, float]:
        """Return {event id: published at} for those of ``ids`` marked published."""
        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.c.id, t.c.published_at).where(
                    t.c.id.in_(list(ids)), t.c.published_at.is_not(None)
                )
            ).all()
        return {row.id: row.published_at.timestamp() for row in rows}

    def recorded(self, ids: Sequence[str]) -> set[str]:
        """Return those of ``ids`` that have a row in the outbox."""
        found: set[str] = set()
        t = self.table
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                found.update(conn.execute(select(t.c.id).where(t.c.id.in_(chunk))).scalars())
        return found

    def close(self) -> None:
        """Dispose of the engine if this ledger created it."""
        if self._own:
            self.engine.dispose()


def signer_of(opener) -> Callable[[object], str | None]:
    """Return a function giving the producer kid an encrypted envelope claims, using a reader's key.

    The kid is inside the ciphertext (the JWS header), so only a reader of
    the event sees it. It is the kid as claimed: the key rule then says
    whether that key is on file and not retired; the signature itself is
    the consumer's to verify.
    """
    import json as _json

    from ..crypto.open import _parse_jwe
    from ..crypto.seal import unb64

    def producer_kid(envelope) -> str | None:
        if not envelope.encrypted:
            return None
        try:
            opener._maybe_reload()
            jwe = _parse_jwe(envelope.data, envelope.id)
            aead, _ = opener._content_key(jwe, envelope.id)
            jws = aead.decrypt(
                unb64(jwe["iv"]),
                unb64(jwe["ciphertext"]) + unb64(jwe["tag"]),
                (jwe["protected"] + "." + jwe["aad"]).encode("ascii"),
            )
            header = _json.loads(unb64(jws.split(b".", 1)[0].decode("ascii")))
            kid = header.get("kid")
            return kid if isinstance(kid, str) else None
        except Exception:
            return None  # not for this reader, or tampered: the other rules still see the event

    return producer_kid
