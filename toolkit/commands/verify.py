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
    handled twice.

    \b
    Your events are never touched: the scenarios use a private outbox table
    (sv<random>_outbox and its companions, dropped afterwards) and a private
    destination prefix on the broker (deleted afterwards). db-cut terminates
    only the scenario's own connections (PostgreSQL); broker-outage starts and
    stops a broker of its own (redis-server, nats-server, rabbitmq-server or
    mosquitto must be on PATH).

    \b
    Example:
      strangler verify --db postgresql+psycopg://app@db/shop --router redis://127.0.0.1:6379/0
      strangler verify --db postgresql+psycopg://app@db/shop --router nats://127.0.0.1:4222 \\
          --scenario relay-kill --scenario consumer-kill --events 500 --json
    """
    from outbox.faults import Budget, run_scenario
    from outbox.faults.scenarios import SCENARIOS, Unsupported
    from outbox.faults.stage import StageError

    from .outbox import engine_for

    config = load(ctx, db=db, router=router_url)
    engine_for(config.db).dispose()  # a malformed URL or a missing driver is a usage error
    budget = Budget(events=events, kills=kills, consumer_kills=kills, seconds=seconds,
                    outage=min(30.0, max(3.0, seconds / 4)), db_cuts=max(2, kills // 2),
                    backlog=min(100_000, events * 10), backlog_pad=1024, hold_seconds=min(5.0, seconds / 10))
    failed = 0
    for name in scenarios or list(SCENARIOS):
        click.echo(f"running {name} ...", err=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"strangler-verify-{name}-"))
        try:
            figures = run_scenario(name, config.db, config.router, budget=budget, workdir=workdir)
        except Unsupported as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            _report(as_json, {"scenario": name, "skipped": str(exc)}, f"{name}: skipped ({exc})")
            continue
        except StageError as exc:
            failed += 1
            click.echo(f"{name}: the processes' logs are in {workdir}", err=True)
            _report(as_json, {"scenario": name, "ok": False, "error": str(exc)}, f"{name}: FAILED ({exc})")
            continue
        if figures.ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            failed += 1
            click.echo(f"{name}: the processes' logs are in {workdir}", err=True)
        _report(as_json, figures.as_dict(), figures.line())
    if failed:
        raise Problems(f"{failed} scenario(s) lost, reordered or double-handled events, or could not finish")


def _report(as_json: bool, doc: dict, line: str) -> None:
    click.echo(json.dumps(doc, default=str) if as_json else line)
