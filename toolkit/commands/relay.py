"""``strangler relay``: publish the outbox to a broker, in order per aggregate, at least once."""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable

import click

from ..context import Problems, load


class JsonLines(logging.Formatter):
    """One JSON object per log line: time, level, message and the relay's structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "relay", {}) or {})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"))


def _logging(level: str) -> Callable[[], None]:
    """Send the ``strangler`` loggers to stderr as JSON lines; return what undoes it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    logger = logging.getLogger("strangler")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False

    def restore() -> None:
        logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]

    return restore


@click.command(name="relay")
@click.option("--db", help="SQLAlchemy URL of the database holding the outbox (default: db from config).")
@click.option("--router", "router_url", help="Router URL, e.g. redis://127.0.0.1:6379/0 (default: router from config).")
@click.option("--once", is_flag=True, help="Publish everything claimable now, then exit.")
@click.option("--batch", type=int, help="Rows claimed and published per batch (default: relay.batch, 200).")
@click.option("--metrics-port", type=int, help="Serve /metrics, /healthz and /readyz on this port (0: off).")
@click.option("--max-attempts", type=int, help="Failed publishes before a row is dead (default: relay.max_attempts).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Log level (JSON lines on stderr).")
@click.pass_context
def command(ctx: click.Context, db, router_url, once, batch, metrics_port, max_attempts, log_level):
    """Publish outbox rows to a broker: claim, publish, mark; in order per aggregate.

    \b
    Runs beside the monolith until SIGTERM or SIGINT, which finish and mark
    the batch in flight and exit 0; one that comes during start-up exits 0
    once start-up is done, having claimed nothing. Several relays may run at
    once: they share the outbox's 64 lease partitions. Logs are JSON lines on
    stderr, one per batch, never the payload. With --once, exit 1 if some
    rows could not be published, or a database error cut the run short
    (the first reason is printed).

    \b
    Examples:
      strangler relay --db postgresql+psycopg://app@db/shop --router redis://127.0.0.1:6379/0
      strangler relay --db sqlite:///shop.db --router file://./events --once
      strangler relay --db sqlite:///shop.db --router amqp://guest:guest@127.0.0.1/%2F --metrics-port 9464
    """
    with StopSignals() as stop:
        config = load(ctx, db=db, router=router_url, relay__batch=batch, relay__metrics_port=metrics_port,
                      relay__max_attempts=max_attempts)
        restore_logging = _logging(log_level)
        try:
            _run(config, once, stop)
        finally:
            restore_logging()


class StopSignals:
    """SIGTERM and SIGINT handled from the command's start, so a stop during start-up still exits 0.

    Until the relay exists a signal is only recorded; ``attach`` hands it on,
    and a relay stopped before ``run`` returns at once without claiming.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self._relay = None
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.requested = True  # a plain assignment: safe in a handler
        # The stop itself runs on a thread: called here, it could wait forever for a lock the
        # interrupted main thread holds (outbox.signals says why). outbox.signals.stop_on_signal
        # is not used so that installing these handlers imports nothing: they are in place
        # before the command's slow imports.
        threading.Thread(target=self._stop_attached, name="strangler-stop", daemon=True).start()

    def _stop_attached(self) -> None:
        if self._relay is not None:
            self._relay.stop()

    def attach(self, relay) -> None:
        """Stop ``relay`` on the next signal, or now if one came already."""
        self._relay = relay
        if self.requested:
            relay.stop()


def envelope_transform_for(config):
    """Return the relay's envelope transform for ``crypto.encrypt_at``.

    ``relay``: seal. ``emit``, with the policy file readable here: refuse
    plaintext rows of the types the policy encrypts (a monolith process that
    ran without the policy wrote them). Otherwise None: rows pass as written.
    """
    if config.crypto.encrypt_at == "emit":
        return _plaintext_guard_for(config)
    if config.crypto.encrypt_at != "relay":
        return None
    from outbox.crypto import producer_crypto

    try:
        return producer_crypto(
            "relay", config.crypto.keys_dir, config.crypto.policy, producer=config.crypto.producer,
            reuse_events=config.crypto.reuse_events, reuse_seconds=config.crypto.reuse_seconds,
        ).envelope_transform
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"crypto.encrypt_at = 'relay' but the keys or policy cannot be loaded: {exc}")


def _plaintext_guard_for(config):
    from toolkit.config import ConfigError

    try:
        policy_path = config.policy_file()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if policy_path is None:
        return None  # no policy at the default path: a project without encryption yet
    try:
        from outbox.crypto import PolicyError, load_policy, plaintext_guard
    except ImportError as exc:
        raise click.UsageError(f"{policy_path} is there to be enforced: {exc}") from None
    try:
        return plaintext_guard(load_policy(policy_path))
    except (OSError, ValueError, PolicyError) as exc:
        raise click.UsageError(f"crypto.policy = {policy_path!r} cannot be loaded: {exc}") from None


def relay_options(config):
    """Return the ``RelayOptions`` the ``[relay]`` settings and the outbox table name make."""
    from outbox.relay import RelayOptions

    relay = config.relay
    return RelayOptions(
        batch=relay.batch, max_attempts=relay.max_attempts, poll_interval=relay.poll_interval,
        lease_seconds=relay.lease_seconds, retry_base=relay.retry_base, retry_max=relay.retry_max,
        outage_max=relay.outage_max, coalesce=relay.coalesce, mark_interval=relay.mark_interval,
        table_name=config.outbox_table,
    )


def _run(config, once: bool, stop: StopSignals) -> None:
    from sqlalchemy.exc import ArgumentError

    from outbox.relay import Relay, network_timeouts
    from outbox.routers import RouterError, masked_url, open_router

    from .outbox import engine_for

    log = logging.getLogger("strangler.relay")
    try:
        timeouts = network_timeouts(config.db) if config.db else {}
    except ArgumentError:
        timeouts = {}  # engine_for names what is wrong with the URL
    engine = engine_for(config.db, connect_args=timeouts)
    router = server = None
    try:
        try:
            router = open_router(config.router)
        except RouterError as exc:
            raise click.UsageError(f"--router {masked_url(config.router)!r}: {exc}") from None
        transform = envelope_transform_for(config)
        metrics = None
        scheme = config.router.split(":", 1)[0]
        if config.relay.metrics_port:
            from outbox.metrics import MetricsServer, RelayMetrics

            try:
                metrics = RelayMetrics(scheme)
            except RuntimeError as exc:
                raise click.UsageError(str(exc)) from None
        relay = Relay(
            engine, router,
            options=relay_options(config),
            envelope_transform=transform, metrics=metrics,
        )
        stop.attach(relay)
        if metrics is not None and not stop.requested:
            try:
                server = MetricsServer(metrics, config.relay.metrics_port, healthy=relay.healthy,
                                       ready=relay.ready).start()
            except OSError as exc:
                raise click.UsageError(f"--metrics-port {config.relay.metrics_port}: {exc}") from None
        if stop.requested:
            log.info("stop requested during start-up: nothing claimed", extra={"relay": {"event": "start_stopped"}})
        else:
            log.info(
                "relay started", extra={"relay": {"event": "start", "owner": relay.owner, "router": scheme,
                                                  "once": once, "metrics_port": server.port if server else 0}},
            )
        try:
            stats = relay.run(once=once)
        except click.ClickException as exc:  # says what happened and what to do already
            raise Problems(f"relay stopped: {exc.format_message()}") from None
        except Exception as exc:
            raise Problems(f"relay stopped: {type(exc).__name__}: {exc}") from None
    finally:
        if router is not None:
            router.close()
        engine.dispose()
        if server is not None:
            server.close()
    log.info(
        "relay stopped", extra={"relay": {"event": "stop", "published": stats.published, "failed": stats.failed,
                                          "dead": stats.dead, "batches": stats.batches}},
    )
    if once and stats.database_error:
        raise Problems(f"stopped early on a database error, {stats.published} events published: "
                       f"{stats.database_error}; what was not marked is published again by the next run")
    if once and stats.failed:
        raise Problems(f"{stats.failed} publishes failed ({stats.dead} rows dead; see 'strangler outbox status'), "
                       f"the first because: {stats.first_error}")
