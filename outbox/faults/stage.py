"""The stage a fault scenario runs on: a private outbox table, a private destination prefix, processes.

Nothing here touches a user's own events: the outbox, its lease and relay
tables, the effects table and the Alembic version table are all named after
the stage (``sv<hex>_outbox`` …), every broker destination and consumer group
carries the stage's prefix, and ``drop()`` removes all of it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    create_engine,
    delete,
    func,
    inspect,
    pool,
    select,
    text,
)
from sqlalchemy.engine import Engine

from .. import inbox
from ..sqlite_paths import sqlite_file, sqlite_uri, uri_path
from ..table import get_outbox_table
from .interrupt import shielded

#: Aggregate type of the scenario's events; its destination is ``<prefix>item``.
AGGREGATE = "item"
EVENT_TYPE = "fault.item.changed"


class StageError(RuntimeError):
    """The stage cannot be set up (database, broker, or a process that would not start)."""


def with_query(url: str, **params: Any) -> str:
    """Return ``url`` with query parameters added or replaced."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += [(k, str(v)) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


#: Router options that name files (TLS): relative ones are made absolute with the rest of the URL.
ROUTER_FILE_OPTIONS = ("ca_file", "cert_file", "key_file")

#: Query parameters of a database URL that name files: libpq's (psycopg) and PyMySQL's.
DB_FILE_PARAMS = ("sslrootcert", "sslcert", "sslkey", "sslcrl", "passfile",
                  "ssl_ca", "ssl_cert", "ssl_key", "read_default_file")


def pinned_router_url(url: str) -> str:
    """``url`` with a relative ``file://`` folder and relative TLS files made absolute, from the current folder.

    The stage's processes run in its working folder, the checker in the
    caller's: a relative path would name two different places.
    """
    folder = _file_folder(url)
    if folder is not None and not folder.is_absolute():
        query = url.partition("?")[2]
        url = f"file://{folder.resolve()}" + (f"?{query}" if query else "")
    if "?" not in url:
        return url
    files = {key: os.path.abspath(value) for key, value in parse_qsl(url.partition("?")[2], keep_blank_values=True)
             if key in ROUTER_FILE_OPTIONS and value and not os.path.isabs(value)}
    return with_query(url, **files) if files else url


def pinned_db_url(url: str) -> str:
    """``url`` with a relative SQLite file and relative certificate files made absolute, from the current folder.

    The stage's processes run in its working folder: ``sqlite:///shop.db``
    there would be a new, empty database of its own. Other URLs are returned
    as they are (not re-rendered), so nothing else about them changes.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # not a URL: opening it says so
    pinned = parsed
    path = sqlite_file(url)
    if path is not None:
        uri = sqlite_uri(parsed)
        if not os.path.isabs(uri_path(parsed.database) if uri else parsed.database):
            pinned = pinned.set(database=f"file:{path}" if uri else str(path))
    files = {key: os.path.abspath(value) for key, value in parsed.query.items()
             if key in DB_FILE_PARAMS and isinstance(value, str) and value and not os.path.isabs(value)}
    if files:
        pinned = pinned.update_query_dict(files)
    return url if pinned is parsed else pinned.render_as_string(hide_password=False)


def _file_folder(url: str) -> Path | None:
    """The folder of a ``file://`` router URL; None for any other router."""
    if not url.startswith("file://"):
        return None
    from ..routers.file import folder_of

    return folder_of(url.partition("?")[0])


def check_router(router_url: str) -> None:
    """Open the router and a consumer group on it under a private prefix, then remove both again.

    Raise ``StageError`` saying why that fails (an unknown scheme, a bad
    option, a broker that does not answer): one look before any scenario, so
    that a router none of them could use is reported once, as what it is.
    """
    from ..routers import open_router, open_subscription

    try:
        url = pinned_router_url(router_url)
    except Exception as exc:  # e.g. file:// naming no folder
        raise StageError(str(exc) or type(exc).__name__) from exc
    prefix = f"sv{uuid.uuid4().hex[:10]}_probe_"
    folder = _file_folder(url)
    keep_folder = folder is None or folder.exists()
    try:
        open_router(url).close()
        open_subscription(with_query(url, destination_prefix=prefix), group=f"{prefix}check",
                          destinations=[AGGREGATE]).close()
    except Exception as exc:
        raise StageError(str(exc) or type(exc).__name__) from exc
    finally:
        with shielded(), contextlib.suppress(Exception):
            cleanup_broker(url, prefix, [prefix + AGGREGATE], [f"{prefix}check"], keep_folder=keep_folder)


def effects_table(outbox_name: str) -> Table:
    """The handler's effects: one row per time the handler ran and committed (no unique key on purpose)."""
    name = f"{outbox_name}_effects"
    return Table(
        name,
        MetaData(),
        Column("n", BigInteger().with_variant(Integer(), "sqlite"), autoincrement=True, nullable=False),
        Column("event_id", String(64), nullable=False),
        Column("agg", String(64), nullable=False),
        Column("seq", Integer(), nullable=False),
        Column("pid", Integer(), nullable=False),
        PrimaryKeyConstraint("n", name=f"pk_{name}"),
    )


def spare_port() -> int:
    """Return a TCP port that was free a moment ago on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process of a scenario: started in its own session, logs to a file, killed by pid."""

    def __init__(self, args: list[str], *, env: dict[str, str], cwd: Path, log: Path, role: str):
        self.role = role
        self.log = log
        self._out = open(log, "ab")
        self.popen = subprocess.Popen(args, env=env, cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no flush, no lease release."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait()
        self._out.close()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; SIGKILL after ``timeout``. Return the exit code."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.popen.returncode
        self._out.close()
        return code

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to end on its own; return its exit code."""
        code = self.popen.wait(timeout)
        self._out.close()
        return code

    def wait_for_log(self, needle: str, timeout: float = 60.0) -> bool:
        """Wait until the process's log holds ``needle`` (e.g. the relay's start line); False if it ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log.read_text(errors="replace"):
                return True
            if not self.alive():
                return False
            time.sleep(0.05)
        raise StageError(f"{self.role} did not log {needle!r} within {timeout:.0f} s: {self.tail()}")

    def rss_kib(self) -> int | None:
        """Resident memory of the process in KiB (Linux), None once it ended."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def tail(self, lines: int = 20) -> str:
        """The last lines of the process's log (for failure messages)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclasses.dataclass
class Stage:
    """A private outbox table, destination prefix and working folder on a user's database and broker."""

    db_url: str
    router_url: str
    workdir: Path
    name: str = dataclasses.field(default_factory=lambda: f"sv{uuid.uuid4().hex[:10]}")
    lease_seconds: float = 2.0
    router_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.db_url = pinned_db_url(self.db_url)
        self.router_url = pinned_router_url(self.router_url)
        folder = _file_folder(self.router_url)
        #: False when the stage's file router will make its folder: drop() removes it again if empty.
        self._keep_folder = folder is None or folder.exists()
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The processes' configuration is their flags and environment alone: without a file of their own in
        # their working folder they would read one found above it (a project's, when TMPDIR lies inside one).
        config = self.workdir / "strangler.toml"
        if not config.exists():
            config.write_text("# strangler verify: the scenario's processes take their settings from flags and "
                              "the environment only\n")
        self.engine: Engine = create_engine(self.db_url, poolclass=pool.NullPool)
        self.outbox = get_outbox_table(self.table)
        self.effects = effects_table(self.table)
        self.processes: list[Process] = []
        self._created_inbox = False
        self._sequence = 0

    # -- names --------------------------------------------------------------------------------

    @property
    def table(self) -> str:
        """The private outbox table."""
        return f"{self.name}_outbox"

    @property
    def prefix(self) -> str:
        """Put before every destination and consumer group on the broker."""
        return f"{self.name}_"

    @property
    def consumer_name(self) -> str:
        """The consumer (service) whose inbox and effects are checked."""
        return f"{self.name}_svc"

    @property
    def checker_group(self) -> str:
        """The consumer group that reads back everything the broker holds."""
        return f"{self.prefix}check"

    @property
    def process_db_url(self) -> str:
        """The database URL the stage's processes use: on PostgreSQL tagged with the stage's name.

        The tag (``application_name``) lets the db-cut scenario terminate only
        the stage's own connections, never anyone else's.
        """
        if self.engine.dialect.name == "postgresql":
            return with_query(self.db_url, application_name=self.name)
        return self.db_url

    def routed_url(self, **options: Any) -> str:
        """The router URL with the stage's destination prefix and router options."""
        return with_query(self.router_url, destination_prefix=self.prefix, **{**self.router_options, **options})

    @property
    def destinations(self) -> list[str]:
        """Destinations (unprefixed) the scenario's events go to."""
        return [AGGREGATE, "blocked"]

    # -- set-up and tear-down ---------------------------------------------------------------

    def create(self) -> None:
        """Create the private outbox (by its migrations), the effects table and the inbox if missing."""
        from ..migrate import standalone_config, upgrade

        cfg = standalone_config(self.db_url, table_name=self.table)
        cfg.set_main_option("version_table", f"{self.name}_version")
        try:
            upgrade(cfg)
        except Exception as exc:
            raise StageError(f"cannot create the private outbox {self.table} in {self._safe_db()}: {exc}") from exc
        with self.engine.begin() as conn:
            if not inspect(conn).has_table(inbox.INBOX_TABLE):
                self._created_inbox = True
            inbox.metadata.create_all(conn, checkfirst=True)
            self.effects.create(conn)
        self.prepare_broker()

    def prepare_broker(self) -> None:
        """Open (and close) the checker's and the consumer's subscriptions before events flow.

        A RabbitMQ topic exchange drops messages no queue is bound to; declaring
        the queues first makes them hold everything the relay publishes.
        """
        from ..routers import open_subscription

        for group in (self.checker_group, self.consumer_name):
            try:
                sub = open_subscription(self.routed_url(), group=group, destinations=self.destinations)
            except Exception as exc:
                raise StageError(f"cannot subscribe as {group!r}: {exc}") from exc
            sub.close()

    def drop(self) -> None:
        """Remove every table, row, destination and process of the stage; safe after a failed ``create``.

        Each part is cleaned up on its own, so one that fails (a broker gone
        away) leaves the others no less clean; and all of it shielded, so a
        SIGTERM arriving meanwhile stops the run only once it is clean.
        """
        with shielded():
            for process in self.processes:
                if process.alive():
                    process.kill()
            with contextlib.suppress(Exception):
                self._drop_tables()
            with contextlib.suppress(Exception):
                self._clean_inbox()
            with contextlib.suppress(Exception):
                cleanup_broker(self.router_url, self.prefix, [self.prefix + d for d in self.destinations],
                               [self.checker_group, self.consumer_name], keep_folder=self._keep_folder)
            self.engine.dispose()

    def _drop_tables(self) -> None:
        with self.engine.begin() as conn:
            postgres = conn.dialect.name == "postgresql"
            for name in (f"{self.table}_effects", f"{self.table}_relays", f"{self.table}_leases", self.table,
                         f"{self.name}_version"):
                conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
            if postgres:
                conn.execute(text(f"DROP FUNCTION IF EXISTS {self.table}_notify()"))
                conn.execute(text(f"DROP FUNCTION IF EXISTS {self.table}_slow_mark()"))

    def _clean_inbox(self) -> None:
        """Drop the inbox tables if the stage made them; else delete only the rows of its own consumer."""
        with self.engine.begin() as conn:
            if self._created_inbox:
                inbox.metadata.drop_all(conn, checkfirst=True)
                return
            for table in (inbox.inbox_table, inbox.dead_letter_table):
                if inspect(conn).has_table(table.name):
                    conn.execute(delete(table).where(table.c.consumer == self.consumer_name))

    def slow_marks(self, seconds: float) -> None:
        """Make each mark of the private outbox (an UPDATE setting ``published_at``) take ``seconds`` longer.

        A trigger on the stage's own table (PostgreSQL; elsewhere nothing): it
        widens the window between publish and mark, so a relay killed at a
        random moment is often killed inside it, as a relay on a busy database
        would be.
        """
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text(
                    f"CREATE FUNCTION {self.table}_slow_mark() RETURNS trigger LANGUAGE plpgsql AS "
                    f"$$ BEGIN PERFORM pg_sleep({float(seconds)}); RETURN NULL; END $$"
                ))
                conn.execute(text(
                    f"CREATE TRIGGER {self.table}_slow_mark BEFORE UPDATE OF published_at ON {self.table} "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION {self.table}_slow_mark()"
                ))

    def _safe_db(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    # -- processes -------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment of the stage's processes: the private table, short leases, no encryption."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRANGLER_")}
        env.update({
            "STRANGLER_OUTBOX_TABLE": self.table,
            "STRANGLER_SOURCE": "/strangler-verify",
            "STRANGLER_CRYPTO_ENCRYPT_AT": "off",
            "STRANGLER_RELAY_LEASE_SECONDS": str(self.lease_seconds),
            "STRANGLER_RELAY_POLL_INTERVAL": "0.2",
            "PYTHONUNBUFFERED": "1",
        })
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def spawn(self, role: str, args: list[str]) -> Process:
        """Start ``python <args>`` as a process of the stage."""
        self._sequence += 1
        log = self.workdir / f"{self._sequence:03d}-{role}.log"
        process = Process([sys.executable, *args], env=self.env(), cwd=self.workdir, log=log, role=role)
        self.processes.append(process)
        return process

    def start_relay(self, *, batch: int = 20, router_url: str | None = None, max_attempts: int = 10,
                    db_url: str | None = None) -> Process:
        """Start ``strangler relay`` on the stage's table and router."""
        return self.spawn("relay", [
            "-m", "toolkit", "relay", "--db", db_url or self.process_db_url, "--router", router_url or self.routed_url(),
            "--batch", str(batch), "--max-attempts", str(max_attempts), "--log-level", "info",
        ])

    def start_writer(self, index: int, aggregates: range, *, max_events: int, pace: float, stop_file: Path,
                     pad: int = 0, per_txn: int = 3, hold: float = 0.0, holds: int = 0) -> Process:
        """Start a writer process emitting sequenced events for ``aggregates``; it reports to a file."""
        return self.spawn(f"writer{index}", [
            "-m", "outbox.faults.worker", "write", "--db", self.process_db_url, "--table", self.table,
            "--first", str(aggregates.start), "--stop", str(aggregates.stop), "--max-events", str(max_events),
            "--pace", str(pace), "--stop-file", str(stop_file), "--pad", str(pad), "--per-txn", str(per_txn),
            "--hold", str(hold), "--holds", str(holds), "--seed", str(index),
            "--report", str(self.report_path(index)),
        ])

    def start_consumer(self, *, handler_ms: float = 0.0, die_before_ack: float = 0.0, batch: int = 20,
                       idle_seconds: float = 2.0) -> Process:
        """Start a consumer process with an inbox; it exits 0 once the broker stays empty ``idle_seconds``."""
        return self.spawn("consumer", [
            "-m", "outbox.faults.worker", "consume", "--db", self.process_db_url, "--table", self.table,
            "--router", self.routed_url(), "--name", self.consumer_name, "--handler-ms", str(handler_ms),
            "--die-before-ack", str(die_before_ack), "--batch", str(batch), "--idle-seconds", str(idle_seconds),
            "--log", str(self.delivery_log),
        ])

    def report_path(self, index: int) -> Path:
        """Where writer ``index`` writes what it committed."""
        return self.workdir / f"writer-{index}.json"

    @property
    def delivery_log(self) -> Path:
        """One JSON line per delivery the consumer finished: event id and outcome."""
        return self.workdir / "deliveries.jsonl"

    def produced(self) -> dict[str, int]:
        """Committed events per aggregate, from the writers' reports: aggregate → count (seq 0..count-1)."""
        out: dict[str, int] = {}
        for path in sorted(self.workdir.glob("writer-*.json")):
            out.update(json.loads(path.read_text()))
        return out

    # -- the database's view ------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows of the private outbox: total, published, dead, pending."""
        t = self.outbox
        with self.engine.connect() as conn:
            total, published, dead = conn.execute(select(
                func.count(),
                func.count(t.c.published_at),
                func.count(t.c.dead_at),
            )).one()
        return {"total": total, "published": published, "dead": dead, "pending": total - published - dead}

    def wait_for(self, predicate, *, timeout: float, what: str, poll: float = 0.1) -> None:
        """Wait until ``predicate()`` holds; raise StageError naming ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate():
                    return
            except Exception:  # the database may be unreachable on purpose for a moment
                pass
            if time.monotonic() > deadline:
                raise StageError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(poll)

    def wait_drained(self, *, timeout: float = 120.0) -> dict[str, int]:
        """Wait until no row is pending (each is published or dead); return the counts."""
        self.wait_for(lambda: self.counts()["pending"] == 0, timeout=timeout, what="the relay to drain the outbox")
        return self.counts()

    def max_lag(self) -> float:
        """Longest time from emit to the relay's mark, in seconds, over published rows."""
        t = self.outbox
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.c.timestamp, t.c.published_at).where(t.c.published_at.is_not(None))).all()
        return max(((p - e).total_seconds() for e, p in rows), default=0.0)


# -- brokers ------------------------------------------------------------------------------------


def cleanup_broker(router_url: str, prefix: str, destinations: list[str], groups: list[str], *,
                   keep_folder: bool = True) -> None:
    """Delete the stage's streams / exchanges / queues / files / sessions on the broker (best effort).

    A file router's folder itself is removed only when it is left empty and
    ``keep_folder`` is False (the stage made it).
    """
    scheme = urlsplit(router_url).scheme
    if scheme == "file":
        _cleanup_files(router_url, prefix, keep_folder=keep_folder)
    if scheme in ("mqtt", "mqtts"):
        # opened through a prefixed URL, a group's session (client id) carries the prefix too
        end_mqtt_sessions(router_url, [prefix + group for group in groups])
    if scheme in ("redis", "rediss"):
        import redis

        client = redis.Redis.from_url(router_url.split("?", 1)[0], socket_timeout=5)
        try:
            for key in client.scan_iter(match=f"{prefix}*"):
                client.delete(key)
        finally:
            client.close()
    elif scheme in ("amqp", "amqps"):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(router_url.split("?", 1)[0]))
        try:
            channel = connection.channel()
            for group in groups:  # opened through a prefixed URL, a group's queue carries the prefix too
                channel.queue_delete(prefix + group)
            for exchange in destinations:
                channel.exchange_delete(exchange)
        finally:
            connection.close()
    elif scheme in ("nats", "tls", "nats+tls"):
        import asyncio

        import nats

        async def quiet(exc):  # the failure is raised to the caller; no traceback on stderr for each try
            pass

        async def work():
            # One try: a broker that is gone must not hold up the clean-up for minutes of reconnects.
            nc = await nats.connect(router_url.split("?", 1)[0].replace("nats+tls://", "tls://"), connect_timeout=3,
                                    allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0,
                                    error_cb=quiet)
            try:
                js = nc.jetstream()
                for info in await js.streams_info():
                    if info.config.name.startswith(prefix):
                        await js.delete_stream(info.config.name)
            finally:
                await nc.close()

        asyncio.run(work())


def end_mqtt_sessions(router_url: str, client_ids: list[str], *, timeout: float = 5.0) -> None:
    """End the persistent MQTT sessions of ``client_ids``: the broker would keep each for a day otherwise.

    A consumer group's session is kept across disconnects on purpose (it
    queues what the group has not read yet); the stage's groups are done with,
    so each is taken over with a clean start and a session expiry of zero,
    which discards the old session and leaves none behind at the disconnect.
    """
    from ..routers.common import split_options
    from ..routers.mqtt import OPTIONS, _client

    url, opts = split_options(router_url, {}, OPTIONS)
    failures = []
    for client_id in client_ids:
        _, client, (host, port, props) = _client(url, opts, client_id, clean_start=True)
        try:
            client.connect(host, port, keepalive=30, clean_start=True, properties=props)
            deadline = time.monotonic() + timeout
            while not client.is_connected() and time.monotonic() < deadline:
                client.loop(0.1)
            if not client.is_connected():
                failures.append(client_id)
            client.disconnect()
            client.loop(0.1)
        except OSError:
            failures.append(client_id)
    if failures:
        raise StageError(f"cannot end the MQTT sessions {', '.join(failures)}")


def _cleanup_files(router_url: str, prefix: str, *, keep_folder: bool) -> None:
    """Delete a file router's destination files and consumer groups that start with ``prefix``."""
    folder = _file_folder(router_url)
    groups = folder / ".groups"
    for path in folder.glob(f"{prefix}*.jsonl"):
        path.unlink()
    for path in groups.glob(f"{prefix}*"):
        shutil.rmtree(path)
    for path in [groups] if keep_folder else [groups, folder]:
        with contextlib.suppress(OSError):  # not empty: someone else's files are there
            path.rmdir()


#: scheme → the server a private instance runs (RabbitMQ's own start script, not the wrapper that switches user).
BROKER_BINARIES = {
    "redis": ("redis-server",),
    "nats": ("nats-server",),
    "amqp": ("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server"),
    "mqtt": ("mosquitto", "/usr/sbin/mosquitto"),
}


class PrivateBroker:
    """A broker instance of the scenario's own, on a spare port, that the scenario stops and starts.

    Each keeps its data in a folder of the scenario's workdir across a stop and
    a start: Redis an append-only file synced on every write, NATS its JetStream
    file store, RabbitMQ its Mnesia and message store (durable queues,
    persistent messages), Mosquitto its persistence file (sessions, their
    subscriptions and queued QoS 1 messages, written on a clean shutdown).
    ``stop`` is a clean shutdown (SIGTERM).
    """

    def __init__(self, scheme: str, workdir: Path, *, config: str = ""):
        self.scheme = scheme
        #: RabbitMQ only: lines of the node's rabbitmq.conf (e.g. ``max_message_size = 4096``).
        self.config = config
        self.dir = Path(workdir) / f"{scheme}-data"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = spare_port()
        self.process: subprocess.Popen | None = None
        candidates = BROKER_BINARIES.get(scheme, ())
        binary = next((found for name in candidates if (found := shutil.which(name))), None)
        if binary is None:
            wanted = " or ".join(candidates) or scheme
            raise StageError(f"no private {scheme} broker can be started here ({wanted} not on PATH)")
        self.binary = binary
        if scheme == "amqp":
            self.dist_port = spare_port()

    @property
    def url(self) -> str:
        """The URL of the private instance."""
        if self.scheme == "amqp":
            return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        return f"{self.scheme}://127.0.0.1:{self.port}" + ("/0" if self.scheme == "redis" else "")

    def _command(self) -> tuple[list[str], dict[str, str] | None]:
        """The command line (and environment, None for ours) that runs the instance."""
        if self.scheme == "redis":
            return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)], None
        if self.scheme == "nats":
            return [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.dir)], None
        if self.scheme == "mqtt":
            conf = self.dir / "mosquitto.conf"
            conf.write_text("\n".join([
                f"listener {self.port} 127.0.0.1",
                "allow_anonymous true",
                "user root" if os.geteuid() == 0 else "",
                "persistence true",
                f"persistence_location {self.dir}/",
                "autosave_interval 1800",  # besides the save at every clean shutdown
                "max_queued_messages 0",  # an offline session keeps every QoS 1 message, not 1000
                "log_dest stdout",
                "",
            ]))
            return [self.binary, "-c", str(conf)], None
        # RabbitMQ: a node of its own (name, ports, Mnesia, logs, cookie in its own HOME), no plugins,
        # and none of the machine's configuration (which names the shared node's listener).
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(self.config)
        (self.dir / "rabbitmq-env.conf").write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(self.dir),
            "RABBITMQ_NODENAME": f"strangler{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        })
        return [self.binary], env

    def start(self, timeout: float = 90.0) -> None:
        """Start the instance on its port with its data folder, and wait until it answers."""
        args, env = self._command()
        log = open(self.dir.parent / f"{self.scheme}-broker.log", "ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, cwd=self.dir, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StageError(f"private {self.scheme} on port {self.port} did not start "
                                 f"(see {self.dir.parent / f'{self.scheme}-broker.log'})")
            time.sleep(0.1)
        if self.scheme == "nats":
            time.sleep(0.5)  # JetStream recovers its streams after the port opens

    def _answers(self) -> bool:
        """True once the instance accepts a connection (RabbitMQ: a login, which comes after the port)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
        except OSError:
            return False
        if self.scheme != "amqp":
            return True
        import pika

        try:
            pika.BlockingConnection(pika.URLParameters(self.url)).close()
        except Exception:
            return False
        return True

    def stop(self) -> None:
        """Stop the instance (SIGTERM: a clean shutdown, data kept on disk)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)  # the instance's own session only
                self.process.wait()
        self.process = None


@contextlib.contextmanager
def private_broker(scheme: str, workdir: Path, *, config: str = "") -> Iterator[PrivateBroker]:
    """A started private broker, stopped on exit."""
    broker = PrivateBroker(scheme, workdir, config=config)
    try:
        broker.start()  # inside: a signal during the start must not leave the instance running
        yield broker
    finally:
        with shielded():
            broker.stop()
