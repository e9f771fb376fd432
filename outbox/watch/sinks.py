"""Where alerts go: JSON lines on a stream (stderr), a webhook, a Prometheus counter."""

from __future__ import annotations

import json
import logging
import sys
import urllib.error
import urllib.request
from typing import IO

from .engine import Alert

log = logging.getLogger("outbox.watch")


class JsonLines:
    """Writes each alert as one JSON line to ``stream`` (default: stderr)."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream

    def __call__(self, alert: Alert) -> None:
        stream = self.stream or sys.stderr
        stream.write(alert.to_json() + "\n")
        stream.flush()


class Webhook:
    """POSTs each alert as a JSON document to ``url``; a failed POST is logged, never raised.

    The watch goes on when the webhook is down: the alert is still on stderr
    and in the counter, and ``failures`` says how many POSTs did not arrive.
    """

    def __init__(self, url: str, *, timeout: float = 5.0, headers: dict[str, str] | None = None):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL {url!r} must start with http:// or https://")
        self.url = url
        self.timeout = timeout
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": "strangler-watch",
            **(headers or {}),
        }
        self.sent = 0
        self.failures = 0

    def __call__(self, alert: Alert) -> None:
        body = json.dumps(alert.as_dict(), ensure_ascii=False).encode()
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
            self.sent += 1
        except (urllib.error.URLError, OSError) as exc:
            self.failures += 1
            log.warning("webhook %s: cannot deliver alert %s: %s", self.url, alert.rule, exc)


_COUNTERS: dict[int, object] = {}


class PrometheusCounter:
    """Counts alerts in ``strangler_watch_alerts_total{rule, kind}``; a no-op without prometheus-client."""

    def __init__(self, registry=None):
        try:
            from prometheus_client import REGISTRY, Counter
        except ImportError:
            self.counter = None
            return
        registry = registry if registry is not None else REGISTRY
        # One counter per registry: a second watch in the process counts into the same series.
        self.counter = _COUNTERS.get(id(registry))
        if self.counter is None:
            self.counter = _COUNTERS[id(registry)] = Counter(
                "strangler_watch_alerts",
                "Alerts raised by strangler watch, by rule and kind.",
                ["rule", "kind"],
                registry=registry,
            )

    def __call__(self, alert: Alert) -> None:
        if self.counter is not None:
            self.counter.labels(rule=alert.rule, kind=alert.kind).inc()
