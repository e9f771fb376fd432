"""The watch loop: read a router as the watch's own consumer group, observe, acknowledge, tick.

Any router is read through its consumer side (``open_subscription``). Redis
Streams has a reader of its own, because the watch must keep up with the
relay on one core: ``XREAD`` from the watch group's last-delivered id, with
the position saved by one ``XGROUP SETID`` per batch instead of one ``XACK``
per event, and observations built from the entry's fields without building
and validating a full envelope.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Sequence

from ..envelope import JOSE_CONTENT_TYPE, Envelope, parse_time
from ..routers import RouterError, masked_url, open_subscription
from .engine import Observation, Watch, recipient_kids

log = logging.getLogger("strangler.watch")

DEFAULT_GROUP = "strangler-watch"

KidOf = Callable[[Envelope], "str | None"]


def run_watch(
    watch: Watch,
    router_url: str,
    destinations: Sequence[str],
    *,
    group: str = DEFAULT_GROUP,
    once: bool = False,
    stop: threading.Event | None = None,
    poll: float = 1.0,
    batch: int = 500,
    producer_kid_of: KidOf | None = None,
) -> int:
    """Observe every event on ``destinations`` until ``stop`` is set (or, with ``once``, the router is drained).

    The watch reads with its own group, so it sees every event once and never
    takes one from a service. With ``once`` the periodic checks run a last
    time at the end. Returns the number of events observed.
    """
    stop = stop or threading.Event()
    watch.own_groups.add(group)
    reader = open_reader(router_url, group, destinations, producer_kid_of)
    seen = 0
    try:
        while not stop.is_set():
            observations = reader.read(batch, poll)
            for observation in observations:
                watch.observe(observation)
            reader.commit()
            seen += len(observations)
            watch.tick()
            if once and not observations:
                break
    finally:
        reader.close()
    if once:
        watch.tick(force=True)
    return seen


def open_reader(
    router_url: str, group: str, destinations: Sequence[str], producer_kid_of: KidOf | None = None
):
    """Return the watch's reader of ``destinations`` on ``router_url`` as consumer group ``group``."""
    if router_url.split("://", 1)[0] in ("redis", "rediss"):
        return RedisReader(router_url, group, destinations, producer_kid_of)
    return SubscriptionReader(router_url, group, destinations, producer_kid_of)


class SubscriptionReader:
    """Reads through a router's consumer side; acknowledges each batch after it was observed."""

    def __init__(
        self,
        router_url: str,
        group: str,
        destinations: Sequence[str],
        producer_kid_of: KidOf | None,
    ):
        self.subscription = open_subscription(
            router_url, group=group, destinations=list(destinations)
        )
        self.kid_of = producer_kid_of
        self._batch: list[Any] = []

    def read(self, max_events: int, timeout: float) -> list[Observation]:
        """Return the observations of up to ``max_events`` deliveries."""
        self._batch = self.subscription.receive(max_events=max_events, timeout=timeout)
        kid_of = self.kid_of
        observations = []
        for d in self._batch:
            if d.envelope is None:  # not a CloudEvent: nothing to observe; the services dead-letter it
                log.warning("%s: a message that is not a CloudEvent (%s): %s", d.destination, d.location, d.malformed)
                continue
            observations.append(
                Observation.of(d.envelope, d.destination, kid_of(d.envelope) if kid_of is not None else None)
            )
        return observations

    def commit(self) -> None:
        """Acknowledge the last batch, last first: a router that keeps a committed offset (file) then
        writes it once per batch. A crash before the acks only makes the watch see the batch again."""
        for delivery in reversed(self._batch):
            delivery.ack()
        self._batch = []

    def close(self) -> None:
        """Close the subscription."""
        self.subscription.close()


class RedisReader:
    """Reads Redis streams for the watch: ``XREAD`` from the group's last-delivered id; ``XGROUP SETID`` per batch."""

    def __init__(
        self,
        router_url: str,
        group: str,
        destinations: Sequence[str],
        producer_kid_of: KidOf | None,
    ):
        from ..routers import split_destination_prefix
        from ..routers.redis import _client

        if not destinations:
            raise ValueError("name at least one destination (stream) to watch")
        # The streams the relay published to: a destination_prefix in the URL goes before each
        # name, as open_subscription does for the services' consumers.
        router_url, prefix = split_destination_prefix(router_url)
        destinations = [prefix + d for d in destinations]
        self.redis, self.client = _client(router_url, {})
        self.group = group
        self.kid_of = producer_kid_of
        self.position: dict[str, str] = {}
        self._moved: dict[str, str] = {}
        try:
            for stream in destinations:
                self._join(stream)
        except self.redis.RedisError as exc:
            self.client.close()
            raise RouterError(f"redis at {masked_url(router_url)} cannot be watched: {exc}") from None

    def _join(self, stream: str) -> None:
        """Create the watch's group on ``stream`` (once) and start from where it last read."""
        try:
            self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
        except self.redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        info = {self._text(g["name"]): g for g in self.client.xinfo_groups(stream)}
        self.position[stream] = self._text(info[self.group]["last-delivered-id"])

    @staticmethod
    def _text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    def read(self, max_events: int, timeout: float) -> list[Observation]:
        """Return the observations of up to ``max_events`` new entries, waiting up to ``timeout`` for the first."""
        replies = self.client.xread(
            self.position, count=max_events, block=max(1, int(timeout * 1000))
        )
        out: list[Observation] = []
        for stream, entries in replies or []:
            stream = self._text(stream)
            for entry_id, fields in entries:
                observation = self._observation(fields, stream)
                if observation is not None:
                    out.append(observation)
            if entries:
                self.position[stream] = self._moved[stream] = self._text(entries[-1][0])
        return out

    def _observation(self, fields: dict, stream: str) -> Observation | None:
        get = fields.get
        event_id = get(b"ce_id")
        if event_id is None:
            return None  # not a CloudEvent entry: nothing to observe
        content_type = get(b"ce_datacontenttype", b"").decode()
        time_text = get(b"ce_time")
        try:
            event_time = parse_time(time_text.decode()) if time_text else None
        except ValueError:
            event_time = None
        producer_kid = None
        if self.kid_of is not None and content_type == JOSE_CONTENT_TYPE:
            from ..routers.redis import envelope_of

            try:
                producer_kid = self.kid_of(envelope_of(fields))
            except ValueError:
                producer_kid = None
        observation = Observation(
            id=event_id.decode(),
            type=get(b"ce_type", b"").decode(),
            source=get(b"ce_source", b"").decode(),
            subject=get(b"ce_subject", b"").decode(),
            destination=stream,
            time=event_time,
            producer_kid=producer_kid,
        )
        if content_type == JOSE_CONTENT_TYPE:
            observation.recipients = recipient_kids(_DataOnly(get(b"data", b"")))
        return observation

    def commit(self) -> None:
        """Save the position of every stream read since the last commit (one round trip)."""
        if not self._moved:
            return
        pipe = self.client.pipeline(transaction=False)
        for stream, entry_id in self._moved.items():
            pipe.xgroup_setid(stream, self.group, entry_id)
        pipe.execute()
        self._moved = {}

    def close(self) -> None:
        """Save the position and close the connection."""
        try:
            self.commit()
        finally:
            self.client.close()


class _DataOnly:
    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data
