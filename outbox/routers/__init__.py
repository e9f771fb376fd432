"""Routers: publish CloudEvents to brokers, chosen by URL scheme through entry points.

``open_router("redis://127.0.0.1:6379/0")`` finds the class registered under
the ``strangler.routers`` entry-point group for the scheme (``redis``), so a
third-party package adds a broker by declaring an entry point; nothing here
changes. ``open_subscription`` opens the consumer side of the same router.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Iterable
import dataclasses
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .base import Delivery, Destinations, PublishResult, Router, RouterError, Subscription
from .common import masked_url

ENTRY_POINT_GROUP = "strangler.routers"

__all__ = [
    "Delivery",
    "Destinations",
    "PublishResult",
    "Router",
    "RouterError",
    "Subscription",
    "available_schemes",
    "masked_url",
    "open_router",
    "open_subscription",
    "router_class",
    "supports_ephemeral",
]


def available_schemes() -> list[str]:
    """Return the URL schemes of every installed router."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def router_class(url: str) -> type:
    """Return the router class registered for ``url``'s scheme."""
    scheme = urlsplit(url).scheme
    if not scheme:
        raise RouterError(
            f"router URL {masked_url(url)!r} has no scheme; e.g. file://./events or redis://127.0.0.1:6379/0"
        )
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == scheme]
    if not matches:
        raise RouterError(
            f"no router for scheme {scheme!r} in {masked_url(url)!r}; installed: {', '.join(available_schemes())}. "
            "A broker's router may need an extra, e.g. pip install 'strangler[redis]'"
        )
    try:
        return matches[0].load()
    except ImportError as exc:
        raise RouterError(f"the {scheme!r} router cannot be loaded: {exc}") from exc


def split_destination_prefix(url: str) -> tuple[str, str]:
    """Take the ``destination_prefix`` query parameter out of ``url``; return (url, prefix).

    Every router understands it: ``redis://host/0?destination_prefix=staging_`` puts
    ``staging_`` before every stream / exchange / subject / topic name, on the
    publishing and the consuming side alike, so environments sharing a broker
    stay apart.
    """
    parts = urlsplit(url)
    if "destination_prefix" not in parts.query:
        return url, ""
    kept, prefix = [], ""
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "destination_prefix":
            prefix = value
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), prefix


def open_router(url: str, *, destinations: Destinations | None = None, **options: Any) -> Router:
    """Open the router for ``url``; ``options`` are the router's own (e.g. TLS files)."""
    url, prefix = split_destination_prefix(url)
    destinations = destinations or Destinations()
    if prefix:
        destinations = dataclasses.replace(destinations, prefix=prefix + destinations.prefix)
    cls = router_class(url)
    return cls(url, destinations=destinations, **options)


def open_subscription(
    url: str, *, group: str, destinations: Iterable[str], ephemeral: bool = False, **options: Any
) -> Subscription:
    """Open the consumer side of the router for ``url``, reading ``destinations`` as ``group``.

    ``ephemeral=True`` opens a group that lives only as long as this
    subscription (``strangler events tail``'s): it starts where a new group
    would, and leaves nothing on the broker once closed, and as little as the
    broker allows when the process is killed (an exclusive RabbitMQ queue, an
    ephemeral JetStream consumer, a clean MQTT session, no Redis group, no file
    offsets). Its acks are kept only for its own lifetime. It creates no
    destination either: where the broker needs one to read it (a RabbitMQ
    exchange, a JetStream stream), a missing one is an error. Only a router
    whose class sets ``EPHEMERAL_GROUPS = True`` is asked for one (its
    ``subscribe`` then gets ``ephemeral=True``); for any other, this raises
    ``RouterError`` rather than leave a durable group behind unannounced.
    """
    url, prefix = split_destination_prefix(url)
    cls = router_class(url)
    subscribe = getattr(cls, "subscribe", None)
    if subscribe is None:
        raise RouterError(f"the router for {masked_url(url)!r} has no consumer side")
    if ephemeral:
        if not supports_ephemeral(cls):
            raise RouterError(
                f"the router for {masked_url(url)!r} ({cls.__module__}.{cls.__qualname__}) cannot open an "
                "ephemeral group: it does not set EPHEMERAL_GROUPS = True; open a named group and delete it "
                "on the broker when done"
            )
        options["ephemeral"] = True
    if prefix and getattr(cls, "GROUP_NAMES_ARE_GLOBAL", False):
        # The group names a broker-wide object (a RabbitMQ queue, an MQTT session): without the
        # prefix, two environments' groups of one name would share it and read each other's events.
        group = prefix + group
    return subscribe(url, group=group, destinations=[prefix + d for d in destinations], **options)


def supports_ephemeral(router: str | type) -> bool:
    """Whether the router (its URL or class) opens ephemeral groups (``open_subscription(..., ephemeral=True)``)."""
    cls = router_class(router) if isinstance(router, str) else router
    return getattr(cls, "EPHEMERAL_GROUPS", False) is True
