"""``strangler verify``: run the fault scenarios against your own database and broker."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import click

from ..context import Problems, load


@click.command(name="verify")
@click.option("--db", help="SQLAlchemy URL of a database to run in (default: db from config).")
@click.option("--router", "router_url", help="Router URL of the broker to run on (default: router from config).")
@click.option("--events", type=click.IntRange(min=30, max=100_000), default=300, show_default=True,
              help="Events written per scenario (about; the backlog scenario writes ten times as many).")
@click.option("--seconds", type=click.FloatRange(min=5, max=3600), default=60.0, show_default=True,
              help="Longest time each scenario spends injecting its fault.")
@click.option("--kills", type=click.IntRange(min=1, max=100), default=8, show_default=True,
              help="SIGKILLs of a relay (relay-kill, multi-relay) or consumer (consumer-kill) per scenario.")
@click.option("--scenario", "scenarios", multiple=True,
              type=click.Choice(["relay-kill", "multi-relay", "long-transactions", "consumer-kill",
                                 "broker-outage", "db-cut", "poison-rows", "backlog"]),
              help="Run only this scenario (repeatable; default: every one that fits the database and broker).")
@click.option("--json", "as_json", is_flag=True, help="Write one JSON object per scenario instead of a line.")
@click.pass_context
def command(ctx: click.Context, db, router_url, events, seconds, kills, scenarios, as_json):
    """Prove the guarantees on your own set-up: kill relays and consumers, cut connections, poison rows.

    \b
    Each scenario writes sequenced events from several writer processes, runs
    real 'strangler relay' processes, injects its fault, then reads back what
    the broker holds and what a consumer with an inbox handled, and prints one
    line: events produced, delivered, duplicates delivered and absorbed, lost,
    order violations, max lag. Exit 1 if anything was lost, reordered or
    handled twice, or a scenario could not finish.

    \b
    Your events are never touched: the scenarios use a private outbox table
    (sv<random>_outbox and its companions) and a private destination prefix on
    the broker, and remove them afterwards, also when a scenario fails. The
    consumer's inbox tables (strangler_inbox, strangler_dead_letters) are
    created only if missing, and then dropped again; existing ones keep every
    row but the scenario consumer's own. db-cut terminates only the
    scenario's own connections (PostgreSQL); broker-outage starts and stops a
    broker of its own (redis-server, nats-server, rabbitmq-server or
    mosquitto must be on PATH). On MQTT the consumer groups' persistent
    sessions are ended too. A database or router that cannot be opened
    is a usage error (exit 2), found before any scenario runs.

    \b
    Relative paths (sqlite:///shop.db, file://./events, TLS files) are from
    the current folder, made absolute before any process starts. A missing
    SQLite file is made for the run and removed afterwards; sqlite:// (in
    memory) is a usage error: the scenarios' processes could not open it.

    \b
    SIGTERM or Ctrl-C stops the run after the same clean-up (a second one
    while it runs is ignored; SIGKILL skips it): exit 1, saying so.

    \b
    Example:
      strangler verify --db postgresql+psycopg://app@db/shop --router redis://127.0.0.1:6379/0
      strangler verify --db postgresql+psycopg://app@db/shop --router nats://127.0.0.1:4222 \\
          --scenario relay-kill --scenario consumer-kill --events 500 --json
    """
    from outbox.faults import Budget
    from outbox.faults.interrupt import Interrupted, shielded, signals_interrupt
    from outbox.faults.scenarios import SCENARIOS

    config = load(ctx, db=db, router=router_url)
    budget = Budget(events=events, kills=kills, consumer_kills=kills, seconds=seconds,
                    outage=min(30.0, max(3.0, seconds / 4)), db_cuts=max(2, kills // 2),
                    backlog=min(100_000, events * 10), backlog_pad=1024, hold_seconds=min(5.0, seconds / 10))
    names = scenarios or list(SCENARIOS)
    outcomes: list[str] = []
    # Without a handler SIGTERM ends the process on the spot, skipping the clean-up in the scenarios'
    # finally blocks: their tables, destinations and processes would stay behind.
    try:
        with signals_interrupt():
            # The scenarios' processes run in working folders of their own: a relative SQLite file or file://
            # folder (or TLS file) is made absolute here, once, from the current folder, as every command reads it.
            db_url, new_db = _pin_database(config.db)
            try:
                _check_database(db_url)
                router = _check_router(config.router)
                if new_db is not None:
                    click.echo(f"--db: {new_db} does not exist: the scenarios run in a new SQLite database there, "
                               "removed again afterwards", err=True)
                for name in names:
                    outcomes.append(_run_one(name, db_url, router, budget, as_json))
            finally:
                if new_db is not None:
                    with shielded():
                        _remove_made_database(new_db)
    except Interrupted as exc:
        raise Problems(_interrupted(exc.name, names, outcomes)) from None
    summary = _summary(outcomes)
    if summary:
        raise Problems(summary)


def _interrupted(signal_name: str, names: list[str], outcomes: list[str]) -> str:
    """The message of a run stopped by a signal: how far it got, and that it cleaned up before exiting."""
    return (f"interrupted by {signal_name} after {len(outcomes)} of {len(names)} scenario(s); the clean-up ran: "
            "the private tables, broker destinations and processes were removed")


def _summary(outcomes: list[str]) -> str:
    """What went wrong over all scenarios ('' when nothing did): data lost apart from runs that broke off."""
    failed, unfinished = outcomes.count("failed"), outcomes.count("unfinished")
    parts = []
    if failed:
        parts.append(f"{failed} scenario(s) lost, reordered or double-handled events")
    if unfinished:
        parts.append(f"{unfinished} scenario(s) could not finish (the reasons are above)")
    return "; ".join(parts)


def _pin_database(url: str | None) -> tuple[str | None, Path | None]:
    """``url`` with its relative paths made absolute, and the SQLite file the run will make (None if it exists).

    An in-memory SQLite database is a usage error: the scenarios' processes
    could not open it. A SQLite file that does not exist yet is made for the
    run (the scenarios need only their private tables) and removed afterwards.
    """
    from outbox.faults.stage import pinned_db_url
    from outbox.sqlite_paths import is_memory_sqlite, sqlite_file

    if not url:
        return url, None  # engine_for says what to pass
    if is_memory_sqlite(url):
        from .outbox import safe_url

        raise click.UsageError(f"--db: {safe_url(url)} is an in-memory database, which the scenarios' processes "
                               "cannot open\nPass --db a SQLite file instead, e.g. sqlite:///verify.db "
                               "(made if missing, and removed again afterwards)")
    path = sqlite_file(url)
    made = path if path is not None and not path.exists() and path.parent.is_dir() else None
    return pinned_db_url(url), made


def _remove_made_database(path: Path) -> None:
    """Remove the SQLite file the run made, unless a table is in it (someone else's: then it stays)."""
    import contextlib
    import sqlite3

    if not path.is_file():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                return
    except sqlite3.Error:
        return
    for leftover in (path, *(path.with_name(path.name + suffix) for suffix in ("-journal", "-wal", "-shm"))):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _check_database(url: str) -> None:
    """Connect once: a database no scenario could use is a usage error naming --db, before any scenario."""
    from .outbox import DatabaseUnusable, engine_for, reach

    engine = engine_for(url, creates="verify")  # a malformed URL or a missing driver is a usage error already
    try:
        reach(engine)
    except DatabaseUnusable as exc:
        raise click.UsageError(f"--db: {exc.message}\nPass --db the URL of a database that is up "
                               "and that this user may create tables in") from None
    finally:
        engine.dispose()


def _check_router(url: str) -> str:
    """Open the router once: one no scenario could use is a usage error naming --router, before any scenario.

    Return the URL the scenarios use: a relative file:// folder or TLS file made absolute.
    """
    from outbox.faults.stage import StageError, check_router, pinned_router_url

    try:
        check_router(url)
        return pinned_router_url(url)
    except StageError as exc:
        raise click.UsageError(f"--router: {exc}\nPass --router the URL of a broker that is up, "
                               "e.g. redis://127.0.0.1:6379/0 or file:///tmp/strangler-verify") from None


def _run_one(name: str, db_url: str, router_url: str, budget, as_json: bool) -> str:
    """Run one scenario in a working folder of its own and print its line; return ok, skipped, failed or unfinished.

    The scenario drops its tables and broker destinations itself, however it
    ends; the working folder (the processes' logs) is kept when it did not
    pass, and named, and removed when a signal stopped the run.
    """
    from outbox.faults import run_scenario
    from outbox.faults.interrupt import Interrupted
    from outbox.faults.scenarios import Unsupported
    from outbox.faults.stage import StageError

    click.echo(f"running {name} ...", err=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"strangler-verify-{name}-"))
    try:
        figures = run_scenario(name, db_url, router_url, budget=budget, workdir=workdir)
    except Interrupted:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    except Unsupported as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        _report(as_json, {"scenario": name, "skipped": str(exc)}, f"{name}: skipped ({exc})")
        return "skipped"
    except Exception as exc:  # a scenario that breaks must not stop the others, nor hide why
        reason = str(exc) if isinstance(exc, StageError) else f"{type(exc).__name__}: {exc}"
        click.echo(f"{name}: the processes' logs are in {workdir}", err=True)
        _report(as_json, {"scenario": name, "ok": False, "error": reason}, f"{name}: COULD NOT FINISH ({reason})")
        return "unfinished"
    if figures.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        click.echo(f"{name}: the processes' logs are in {workdir}", err=True)
    _report(as_json, figures.as_dict(), figures.line())
    return "ok" if figures.ok else "failed"


def _report(as_json: bool, doc: dict, line: str) -> None:
    click.echo(json.dumps(doc, default=str) if as_json else line)
