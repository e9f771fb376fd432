"""What the broker routers share: lazy client imports, TLS options, URL query options, size checks."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .base import HELD_BACK, PublishResult, RouterError

#: TLS options every broker router takes, as keyword arguments or URL query parameters.
TLS_OPTIONS = ("ca_file", "cert_file", "key_file")


def require(module: str, extra: str, scheme: str):
    """Import a broker client or raise ``RouterError`` naming the extra that installs it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise RouterError(
            f"the {scheme}:// router needs {module.split('.')[0]}: pip install 'strangler[{extra}]' ({exc})"
        ) from exc


def split_options(url: str, options: dict[str, Any], known: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """Move the URL's query parameters named in ``known`` into ``options``; return the rest of the URL.

    Keyword options win over the URL's. An unknown keyword option is an error naming the URL.
    """
    parts = urlsplit(url)
    merged: dict[str, Any] = {}
    rest = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in known:
            merged[key] = value
        else:
            rest.append((key, value))
    unknown = set(options) - set(known)
    if unknown:
        raise RouterError(
            f"{parts.scheme}:// router ({url}): unknown option(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(known)}"
        )
    merged.update({k: v for k, v in options.items() if v is not None})
    query = "&".join(f"{k}={v}" for k, v in rest)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment)), merged


def tls_context(url: str, options: dict[str, Any]) -> ssl.SSLContext:
    """Return a client TLS context: verify the server with ``ca_file`` (else system CAs), present ``cert_file``."""
    try:
        context = ssl.create_default_context(cafile=options.get("ca_file") or None)
        if options.get("cert_file"):
            context.load_cert_chain(options["cert_file"], options.get("key_file") or None)
    except (OSError, ssl.SSLError) as exc:
        raise RouterError(f"{url}: cannot load TLS files {options}: {exc}") from exc
    return context


def too_large(event_id: str, size: int, limit: int, router: str) -> PublishResult:
    """The permanent failure of an event over the router's size limit."""
    return PublishResult(
        event_id, f"event is {size} bytes, over the {router} router's max_bytes {limit}", permanent=True
    )


def as_int(value: Any, name: str, url: str) -> int:
    """Return an integer option or raise ``RouterError`` naming it."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RouterError(f"{url}: option {name}={value!r} must be an integer") from None


class KeyGate:
    """Remembers partition keys that failed in this call, so their later events are held back."""

    def __init__(self):
        self.failed: set[tuple[str, str]] = set()

    def held(self, event) -> PublishResult | None:
        """Return the held-back result for ``event`` if its key already failed in this call."""
        if (event.aggregatetype, event.partitionkey) in self.failed:
            return PublishResult(event.id, HELD_BACK)
        return None

    def fail(self, event, result: PublishResult) -> PublishResult:
        """Record that ``event`` failed; return ``result``."""
        self.failed.add((event.aggregatetype, event.partitionkey))
        return result
