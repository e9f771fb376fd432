"""The relay's Prometheus metrics and its /metrics, /healthz and /readyz endpoint.

Names share the ``strangler_relay_`` prefix, use base units (seconds) and
low-cardinality labels (event type, router scheme, failure kind). Without
``prometheus-client`` installed the relay runs with ``NullMetrics``; asking for
a metrics port then fails naming the extra.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: Seconds: batch publish latency, from a few ms to the broker's worst day.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Seconds: emit → publish lag, from a NOTIFY wake-up to a backlog hours deep.
LAG_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)


class NullMetrics:
    """Accepts every observation and keeps none."""

    def published(self, types: dict[str, int]) -> None:
        """Count events the broker accepted, by type."""

    def failed(self, event_type: str, kind: str) -> None:
        """Count one failed publish (``kind``: transient, permanent)."""

    def dead(self, event_type: str) -> None:
        """Count one row that went dead."""

    def batch_latency(self, seconds: float) -> None:
        """Observe how long one batch took to publish."""

    def lag(self, seconds: list[float]) -> None:
        """Observe emit → publish lag of published events."""

    def pending(self, oldest_age: float, blocked_keys: int, partitions: int) -> None:
        """Set the gauges: oldest claimable row's age, keys held back by a retry, partitions held."""


class RelayMetrics(NullMetrics):
    """Prometheus metrics of one relay, on a registry of its own."""

    def __init__(self, router: str, registry=None):
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise RuntimeError("relay metrics need prometheus-client: pip install 'strangler[metrics]'") from exc
        self.prom = prom
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        self.router = router
        r = self.registry
        self._published = prom.Counter(
            "strangler_relay_published", "Events the broker accepted.", ["type", "router"], registry=r
        )
        self._failed = prom.Counter(
            "strangler_relay_failed", "Failed publishes (kind: transient or permanent).",
            ["type", "router", "kind"], registry=r,
        )
        self._dead = prom.Counter(
            "strangler_relay_dead", "Rows that went dead after max_attempts.", ["type", "router"], registry=r
        )
        self._latency = prom.Histogram(
            "strangler_relay_batch_publish_seconds", "Time to publish one batch, until the broker's acks.",
            ["router"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self._lag = prom.Histogram(
            "strangler_relay_publish_lag_seconds", "From the event's emit (commit) time to the broker's ack.",
            ["router"], buckets=LAG_BUCKETS, registry=r,
        )
        self._oldest = prom.Gauge(
            "strangler_relay_oldest_pending_age_seconds", "Age of the oldest row this relay could claim.",
            registry=r,
        )
        self._blocked = prom.Gauge(
            "strangler_relay_blocked_keys", "Aggregate keys held back because their head row awaits a retry.",
            registry=r,
        )
        self._partitions = prom.Gauge(
            "strangler_relay_partitions", "Lease partitions this relay holds.", registry=r
        )
        self._latency_r = self._latency.labels(router)
        self._lag_r = self._lag.labels(router)

    def published(self, types: dict[str, int]) -> None:
        for event_type, count in types.items():
            self._published.labels(event_type, self.router).inc(count)

    def failed(self, event_type: str, kind: str) -> None:
        self._failed.labels(event_type, self.router, kind).inc()

    def dead(self, event_type: str) -> None:
        self._dead.labels(event_type, self.router).inc()

    def batch_latency(self, seconds: float) -> None:
        self._latency_r.observe(seconds)

    def lag(self, seconds: list[float]) -> None:
        for value in seconds:
            self._lag_r.observe(value)

    def pending(self, oldest_age: float, blocked_keys: int, partitions: int) -> None:
        self._oldest.set(oldest_age)
        self._blocked.set(blocked_keys)
        self._partitions.set(partitions)

    def exposition(self) -> bytes:
        """Return the registry in the Prometheus text format."""
        return self.prom.generate_latest(self.registry)


class MetricsServer:
    """Serves /metrics, /healthz (the loop is turning) and /readyz (database and broker reachable)."""

    def __init__(self, metrics: RelayMetrics, port: int, *, healthy: Callable[[], bool], ready: Callable[[], bool],
                 host: str = "0.0.0.0"):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, status, ctype = outer.metrics.exposition(), 200, outer.metrics.prom.CONTENT_TYPE_LATEST
                elif path == "/healthz":
                    ok = outer.healthy()
                    body, status, ctype = (b"ok\n" if ok else b"stalled\n"), (200 if ok else 503), "text/plain"
                elif path == "/readyz":
                    ok = outer.ready()
                    body, status, ctype = (b"ready\n" if ok else b"not ready\n"), (200 if ok else 503), "text/plain"
                else:
                    body, status, ctype = b"not found: try /metrics, /healthz, /readyz\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scrapes are not worth a log line
                pass

        self.metrics = metrics
        self.healthy = healthy
        self.ready = ready
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="strangler-metrics", daemon=True)

    def start(self) -> MetricsServer:
        """Start serving in a daemon thread; return self."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def monotonic() -> float:
    """The clock health checks use."""
    return time.monotonic()
