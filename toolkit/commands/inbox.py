"""``strangler inbox``: a service's inbox and dead letters, in the service's own database."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click
from sqlalchemy import delete, func, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from ..context import Problems
from .outbox import _cutoff, engine_for, reach

DB_HELP = "SQLAlchemy URL of the service's database (where its handlers write), not the monolith's."


@click.group(name="inbox")
def command() -> None:
    """Look after a service's inbox and dead letters: list, retry, discard, purge.

    \b
    A consumer (outbox.consumer.Consumer) records every event id it handled in
    strangler_inbox and every event it could not handle in strangler_dead_letters,
    both in the service's own database. See docs/consumers.md.

    \b
    Examples:
      strangler inbox migrate --db postgresql+psycopg://billing@db/billing
      strangler inbox dead-letters --db postgresql+psycopg://billing@db/billing
      strangler inbox retry --app billing.service:consumer            # after fixing the handler
      strangler inbox discard --db postgresql+psycopg://billing@db/billing --consumer billing --reason malformed
      strangler inbox purge --db postgresql+psycopg://billing@db/billing --handled-before 30d
    """


@command.command("migrate")
@click.option("--db", required=True, help=DB_HELP)
@click.option("--to", "revision", default="head", show_default=True,
              help="Target revision of the inbox branch; 'base' removes the inbox tables.")
def migrate_command(db: str, revision: str):
    """Create or upgrade strangler_inbox and strangler_dead_letters (Alembic branch 'strangler_inbox').

    \b
    The branch keeps its own version table (strangler_inbox_alembic_version),
    so it fits beside any migration tool. A service on Alembic can take the
    branch into its own history instead: docs/consumers.md says how.

    \b
    Example:
      strangler inbox migrate --db sqlite:///billing.db
    """
    from alembic.util import CommandError

    from outbox import inbox

    engine = engine_for(db, creates="inbox migrate")
    try:
        reach(engine)
    finally:
        engine.dispose()
    try:
        if revision == "base":
            inbox.downgrade(db)
        else:
            inbox.upgrade(db, revision)
    except OperationalError as exc:
        raise Problems(f"migration failed: {' '.join(str(exc.orig).split())}") from None
    except CommandError as exc:
        raise Problems(f"migration failed: {exc}") from None
    click.echo(f"inbox branch at {revision} (its own version table)", err=True)


@command.command("dead-letters")
@click.option("--db", required=True, help=DB_HELP)
@click.option("--consumer", help="Only this consumer's dead letters (its name, e.g. billing).")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="How many to list.")
@click.option("--json", "as_json", is_flag=True, help="Write the dead letters as one JSON object.")
def dead_letters_command(db: str, consumer: str | None, limit: int, as_json: bool):
    """List dead letters, oldest first: event id, type, reason, error. Exit code 1 when there are any.

    \b
    Encrypted events stay encrypted in a dead letter; this shows their
    attributes and why they died, never their data (strangler events
    decrypt does, with the service's key). Reasons: handler (the handler
    raised), malformed (not a CloudEvent), and the verification failures
    (not-for-us, untrusted, tampered, mismatch, plaintext, replay, ...).

    \b
    Example:
      strangler inbox dead-letters --db sqlite:///billing.db --consumer billing --json
    """
    from outbox.inbox import dead_letter_table as t

    engine = engine_for(db)
    condition = t.c.consumer == consumer if consumer else True
    try:
        with engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(t).where(condition)).scalar()
            rows = conn.execute(
                select(t.c.position, t.c.consumer, t.c.event_id, t.c.type, t.c.reason, t.c.error, t.c.received_at)
                .where(condition).order_by(t.c.position).limit(limit)
            ).all()
    except (OperationalError, ProgrammingError) as exc:
        raise Problems(f"cannot read the dead letters: {exc.orig}") from None
    finally:
        engine.dispose()
    letters = [{**row._mapping, "received_at": row.received_at.isoformat()} for row in rows]
    if as_json:
        click.echo(json.dumps({"total": total, "dead_letters": letters}, indent=2))
    else:
        click.echo(f"{total} dead letters" + (f" of {consumer}" if consumer else ""))
        for letter in letters:
            error = letter["error"].splitlines()[0] if letter["error"] else ""
            click.echo(f"  #{letter['position']} {letter['consumer']} {letter['event_id']} {letter['type'] or '-'} "
                       f"{letter['reason']} at {letter['received_at']}: {error}")
        if total > len(letters):
            click.echo(f"  ... {total - len(letters)} more (--limit)")
    if total:
        click.get_current_context().exit(1)


@command.command("retry")
@click.option("--app", "app", required=True, metavar="MODULE:NAME",
              help="The service's Consumer, as an import path: billing.service:consumer "
                   "(or a function that returns one). Imported from the current folder.")
@click.option("--id", "ids", multiple=True, help="Event id of a dead letter to retry (repeatable); default: all.")
@click.option("--type", "event_type", help="Retry only events of this type (exact, or a pattern such as shop.order.*).")
@click.option("--reason", "reasons", multiple=True,
              help="Retry only dead letters of this reason (repeatable), e.g. handler, not-for-us. "
                   "Default: every reason but replay, which is retried only when named here or by --id.")
@click.option("--json", "as_json", is_flag=True, help="Write what each event came to as one JSON object.")
def retry_command(app: str, ids: tuple[str, ...], event_type: str | None, reasons: tuple[str, ...], as_json: bool):
    """Hand dead events to the service's handlers again, oldest first, once their cause is fixed.

    \b
    Each event is verified and decrypted again with the consumer's keys, then
    handled in one transaction that also marks its inbox row handled and deletes
    its dead letters: it has its effect once, or not at all. An event that fails
    again keeps its dead letter, with the new error. Exit code 1 when any event
    is still not handled.

    \b
    Dead letters of reason replay (events older than the consumer's max_age)
    are retried only when named by --id or --reason replay: handled again,
    an old event sent twice could have a second effect.

    \b
    The module is imported as the service imports it; a call to run() during
    that import is refused (keep it under if __name__ == "__main__").

    \b
    Examples:
      strangler inbox retry --app billing.service:consumer
      strangler inbox retry --app billing.service:consumer --id 0190a1b2-... --json
    """
    from .outbox import missing_table_hint

    consumer = load_consumer(app)
    try:
        results = consumer.retry_dead_letters(event_ids=ids, event_type=event_type, reasons=reasons or None)
    except (OperationalError, ProgrammingError) as exc:
        reason = " ".join(str(exc.orig).split())
        hint = missing_table_hint("the service's database", reason, url_placeholder="<its URL>")
        raise Problems(hint or f"cannot read {consumer.name}'s dead letters: {reason}") from None
    if as_json:
        click.echo(json.dumps({"consumer": consumer.name, "retried": [dataclasses.asdict(r) for r in results]}, indent=2))
    else:
        for result in results:
            line = f"{result.outcome:10s} {result.event_id} {result.type or '-'} (was {result.reason})"
            click.echo(line + (f": {result.error}" if result.error else ""))
        click.echo(f"{sum(r.outcome in ('handled', 'duplicate') for r in results)} of {len(results)} "
                   f"dead events of {consumer.name} handled")
    missing = set(ids) - {r.event_id for r in results}
    if missing:
        raise Problems(f"no dead letter of {consumer.name} for: {', '.join(sorted(missing))}")
    if any(r.outcome not in ("handled", "duplicate") for r in results):
        click.get_current_context().exit(1)


def load_consumer(app: str):
    """Import ``module:name`` from the current folder and return the Consumer it names (calling a factory)."""
    from outbox.consumer import Consumer, RunDuringImport, refusing_run

    module_name, _, attribute = app.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"{app!r}: write MODULE:NAME, e.g. billing.service:consumer", param_hint="--app")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        with refusing_run(f"strangler inbox retry imported {module_name} for its Consumer"):
            found: Any = importlib.import_module(module_name)
    except RunDuringImport as exc:
        raise click.BadParameter(f"importing {module_name!r} starts consuming: {exc}", param_hint="--app") from None
    except Exception as exc:
        raise click.BadParameter(
            f"cannot import {module_name!r} from {Path.cwd()}: {type(exc).__name__}: {exc}", param_hint="--app"
        ) from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise click.BadParameter(f"module {module_name!r} has no {attribute!r}", param_hint="--app")
        found = getattr(found, part)
    if isinstance(found, type):
        raise click.BadParameter(
            f"{app} is a class; name the Consumer itself (billing = Consumer(...)) or a function that returns it",
            param_hint="--app",
        )
    if not isinstance(found, Consumer) and callable(found):
        try:
            with refusing_run(f"strangler inbox retry called {app} for its Consumer"):
                found = found()
        except Exception as exc:
            raise click.BadParameter(f"{app}() failed: {type(exc).__name__}: {exc}", param_hint="--app") from None
    if not isinstance(found, Consumer):
        raise click.BadParameter(
            f"{app} is a {type(found).__name__}, not an outbox.consumer.Consumer", param_hint="--app"
        )
    return found


@command.command("discard")
@click.option("--db", required=True, help=DB_HELP)
@click.option("--consumer", required=True, help="The consumer whose dead letters to delete (e.g. billing).")
@click.option("--id", "ids", multiple=True, help="Event id of a dead letter to delete (repeatable).")
@click.option("--reason", help="Delete the dead letters with this reason (e.g. malformed).")
@click.option("--all", "everything", is_flag=True, help="Delete every dead letter of the consumer.")
@click.option("--json", "as_json", is_flag=True, help="Write the result as one JSON object.")
def discard_command(db: str, consumer: str, ids: tuple[str, ...], reason: str | None, everything: bool,
                    as_json: bool):
    """Delete dead letters you decided not to handle; their events stay recorded as dead in the inbox.

    \b
    So a redelivery or a replay of a discarded event is still a duplicate,
    never handled. Name what to delete: --id, --reason or --all.

    \b
    Example:
      strangler inbox discard --db sqlite:///billing.db --consumer billing --reason malformed
    """
    from outbox.inbox import dead_letter_table as t

    if sum((bool(ids), reason is not None, everything)) != 1:
        raise click.UsageError("name what to discard: --id (repeatable), --reason or --all, one of them")
    engine = engine_for(db)
    condition = t.c.consumer == consumer
    if ids:
        condition &= t.c.event_id.in_(ids)
    elif reason is not None:
        condition &= t.c.reason == reason
    try:
        with engine.begin() as conn:
            deleted = conn.execute(delete(t).where(condition)).rowcount
    except (OperationalError, ProgrammingError) as exc:
        raise Problems(f"cannot delete dead letters: {exc.orig}") from None
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"consumer": consumer, "discarded": deleted}))
    else:
        click.echo(f"discarded {deleted} dead letters of {consumer}")
    if ids and not deleted:
        raise Problems(f"{consumer} has no dead letter for the given ids")


@command.command("purge")
@click.option("--db", required=True, help=DB_HELP)
@click.option("--handled-before", required=True,
              help="Delete inbox rows recorded before this: an age (30d, 12h) or an RFC 3339 time.")
@click.option("--consumer", help="Only this consumer's rows.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Rows deleted per transaction (never one unbounded DELETE).")
@click.option("--json", "as_json", is_flag=True, help="Write the result as one JSON object.")
def purge_command(db: str, handled_before: str, consumer: str | None, batch_size: int, as_json: bool):
    """Delete old inbox rows of handled events, in bounded batches, so the inbox does not grow for ever.

    \b
    An id deleted from the inbox is handled again if its event comes back: keep
    rows longer than the broker keeps events and than any replay reaches.
    Only rows of handled events go: the rows of dead (and discarded) events
    stay, with the dead letters, so their redelivery is never handled behind
    your back.

    \b
    Example:
      strangler inbox purge --db sqlite:///billing.db --handled-before 30d
    """
    from outbox.inbox import purge_handled

    cutoff = _cutoff(handled_before, param_hint="--handled-before")
    engine = engine_for(db)
    try:
        deleted = purge_handled(engine, cutoff, consumer=consumer, batch_size=batch_size)
    except (OperationalError, ProgrammingError) as exc:
        raise Problems(f"cannot delete from the inbox: {exc.orig}") from None
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"purged": deleted, "handled_before": cutoff.isoformat()}))
    else:
        click.echo(f"purged {deleted} inbox rows recorded before {cutoff.isoformat()}")
