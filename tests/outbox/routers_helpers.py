"""Decode what a broker holds with the cloudevents SDK, for the router tests."""

from __future__ import annotations

from cloudevents.core.bindings import http


def sdk_from_headers(attributes: dict[str, str], content_type: str | None, data: bytes):
    """Decode attributes read off a broker as CloudEvents HTTP binary-mode headers (``ce-`` + content-type)."""
    headers = {f"ce-{name}": value for name, value in attributes.items() if name != "datacontenttype"}
    if content_type:
        headers["content-type"] = content_type
    return http.from_binary_event(http.HTTPMessage(headers=headers, body=data))
