"""The watch loop: read a router as the watch's own consumer group, observe, acknowledge, tick."""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from ..routers import open_subscription
from .engine import Observation, Watch

DEFAULT_GROUP = "strangler-watch"


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
    producer_kid_of: Callable[[Any], str | None] | None = None,
) -> int:
    """Observe every event on ``destinations`` until ``stop`` is set (or, with ``once``, the router is drained).

    The watch reads with its own group, so it sees every event once and never
    takes one from a service. With ``once`` the periodic checks run a last
    time at the end. Returns the number of events observed.
    """
    stop = stop or threading.Event()
    watch.own_groups.add(group)
    subscription = open_subscription(router_url, group=group, destinations=list(destinations))
    seen = 0
    try:
        while not stop.is_set():
            deliveries = subscription.receive(max_events=batch, timeout=poll)
            for delivery in deliveries:
                kid = producer_kid_of(delivery.envelope) if producer_kid_of is not None else None
                watch.observe(Observation.of(delivery.envelope, delivery.destination, kid))
                delivery.ack()
                seen += 1
            watch.tick()
            if once and not deliveries:
                break
    finally:
        subscription.close()
    if once:
        watch.tick(force=True)
    return seen
