"""What the broker routers share: lazy client imports, TLS options, URL query options, size checks."""

from __future__ import annotations

import re
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


def masked_url(url: str) -> str:
    """Return ``url`` with its password shown as ``***``, for error and log messages.

    Router URLs carry broker credentials (``redis://:secret@host/0``), and a
    message that echoes the URL ends up on a terminal, in CI output and in log
    stores. The user name, host, path and other query parameters stay, so the
    message still says which broker. A query parameter named like a password
    (``?password=…``, which some clients read) is hidden as well.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # not parsable as a URL: hide whatever could be credentials
        return re.sub(r"(://[^/?#@]*?:)[^/?#]*@", r"\1***@", url)
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}:***@{host}" if at and ":" in userinfo else parts.netloc
    query = "&".join(_masked_parameter(p) for p in parts.query.split("&")) if parts.query else parts.query
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _masked_parameter(parameter: str) -> str:
    name, equals, _ = parameter.partition("=")
    return f"{name}=***" if equals and "password" in name.lower() else parameter


#: Query options every router accepts. ``open_router`` and ``open_subscription`` take them out of the
#: URL before the router sees it; they are known here too so that code reading a router URL directly
#: (the watch's group listing) is not refused over them.
SHARED_OPTIONS = ("destination_prefix",)


def split_options(url: str, options: dict[str, Any], known: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """Move the URL's query parameters into ``options``; return the URL without its query, and the options.

    Keyword options win over the URL's. An option, in the query or as a
    keyword, that is not in ``known`` is an error naming the URL (password
    hidden) and the known options. It is raised here, before any connection,
    because a broker client handed an unknown option fails later in its own
    words (redis-py: a ``TypeError`` on every reconnect) or drops it silently.
    """
    parts = urlsplit(url)
    from_url = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted((set(from_url) - set(known) - set(SHARED_OPTIONS)) | (set(options) - set(known)))
    if unknown:
        raise RouterError(
            f"{parts.scheme}:// router ({masked_url(url)}): unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join((*known, *SHARED_OPTIONS))}"
        )
    merged = {k: v for k, v in from_url.items() if k not in SHARED_OPTIONS}
    merged.update({k: v for k, v in options.items() if v is not None})
    return urlunsplit(parts._replace(query="")), merged


def tls_context(url: str, options: dict[str, Any]) -> ssl.SSLContext:
    """Return a client TLS context: verify the server with ``ca_file`` (else system CAs), present ``cert_file``."""
    try:
        context = ssl.create_default_context(cafile=options.get("ca_file") or None)
        if options.get("cert_file"):
            context.load_cert_chain(options["cert_file"], options.get("key_file") or None)
    except (OSError, ssl.SSLError) as exc:
        raise RouterError(f"{masked_url(url)}: cannot load TLS files {options}: {exc}") from exc
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
        raise RouterError(f"{masked_url(url)}: option {name}={value!r} must be an integer") from None


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
