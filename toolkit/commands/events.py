"""``strangler events``: look at the events on a router, decrypt one, replay the outbox, trace one.

``tail`` reads with a throw-away consumer group of its own, so it never takes
events from a real consumer. The group is ephemeral
(``open_subscription(..., ephemeral=True)``): nothing of it is left on the
broker once tail ends, whether by --count, at the end of the events, by
Ctrl-C or SIGTERM, and as little as the broker allows if it is killed. Without ``--key`` it shows the
attributes and who an encrypted event is for; with ``--key`` (a service's
private key file, mode 0600) it decrypts, and verifies the signature when the
producer's public key is in the keys folder. ``replay`` publishes published
outbox rows again, as the relay would (``outbox.replay``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import uuid

import click

from ..context import Problems, load


@click.group(name="events")
def command() -> None:
    """Tail, decrypt, replay and trace events: on a router, and through the outbox and inboxes.

    \b
    Examples:
      strangler events tail --destination order
      strangler events tail --destination order --key keys/billing-1.private.jwk --keys-dir keys
      strangler events trace 0191c3c8-8f8a-7cc0-9a3e-6a1f6b7c8d9e
      strangler events replay --since 2h --type 'shop.order.*' --dry-run
    """


def _opener(key_files: tuple[str, ...], keys_dir: str, policy_path: str | None):
    """Return an Opener holding the given private key(s) and the producers' public keys, or None.

    Without a policy file the opener trusts every producer key on file and
    accepts no plaintext: a human who passes ``--key`` expects sealed events,
    and one that arrives readable and unsigned is a finding, not a pass.
    """
    if not key_files:
        return None
    try:
        from outbox import crypto
        from outbox.crypto.keys import KeyRing
        from outbox.crypto.policy import Policy
    except ImportError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        own = [crypto.load_key_file(path) for path in key_files]
    except crypto.KeyFileError as exc:
        raise click.UsageError(str(exc)) from None
    if any(k.private is None or k.use != "enc" for k in own):
        raise click.UsageError("--key takes a service's private encryption key file (<service>-<n>.private.jwk)")
    services = {k.name for k in own}
    if len(services) > 1:
        raise click.UsageError(f"--key files belong to several services ({', '.join(sorted(services))}); pass one's")
    service = services.pop()
    producers = []
    try:
        folder_ring = KeyRing.load(keys_dir)
        producers = [k for k in folder_ring.keys.values() if k.use == "sig"]
    except crypto.KeyFileError:
        pass  # no folder: decrypt, report the signature as unverifiable
    if policy_path:
        try:
            policy = crypto.load_policy(policy_path)
        except crypto.PolicyError as exc:
            raise click.UsageError(str(exc)) from None
    else:
        policy = Policy(trust={service: sorted({k.name for k in producers})},
                        origin="the default of --policy (no plaintext, every producer key on file trusted)")
    ring = KeyRing([*own, *producers])
    return crypto.Opener(service, ring, policy)


def _describe(envelope, opener) -> tuple[dict, bool]:
    """Return (what to show, ok) for one event."""
    shown = {k: v for k, v in envelope.attributes().items() if k != "specversion"}
    ok = True
    if envelope.encrypted:
        try:
            jwe = json.loads(envelope.data)
            shown["recipients"] = [r.get("header", {}).get("kid") for r in jwe.get("recipients", [])]
        except (ValueError, AttributeError):
            shown["recipients"] = None
    if opener is not None:
        from outbox.crypto import RejectedEvent

        try:
            opened = opener.open(envelope)
        except RejectedEvent as exc:
            shown["rejected"] = {"reason": exc.reason, "error": str(exc)}
            return shown, False
        shown["signed_by"] = opened.producer_kid
        shown["data"] = _json_or_text(opened.data)
    elif not envelope.encrypted:
        shown["data"] = _json_or_text(envelope.data)
    return shown, ok


def _json_or_text(data: bytes):
    try:
        return json.loads(data) if data else None
    except ValueError:
        return data.decode("utf-8", "replace")


def _echo(shown: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(shown, ensure_ascii=False))
        return
    if "unreadable" in shown:
        click.echo(f"-  NOT A CLOUDEVENT  {shown['destination']} {shown['location']}\n    {shown['unreadable']}")
        return
    head = f"{shown.get('time', '-')}  {shown['type']}  {shown['id']}  subject={shown.get('subject', '')}"
    click.echo(head)
    if "rejected" in shown:
        click.echo(f"    REJECTED {shown['rejected']['error']}")
    elif "data" in shown:
        signer = f" (signed by {shown['signed_by']})" if shown.get("signed_by") else ""
        click.echo(f"    data{signer}: {json.dumps(shown['data'], ensure_ascii=False)}")
    elif "recipients" in shown:
        click.echo(f"    encrypted for {', '.join(map(str, shown['recipients'] or []))}; pass --key to decrypt")


_KEY = click.option(
    "--key", "key_files", multiple=True, type=click.Path(dir_okay=False),
    help="A service's private key file (mode 0600) to decrypt with; repeat for several versions.",
)
_KEYS_DIR = click.option("--keys-dir", help="Folder with the producers' public keys, to verify signatures.")
_POLICY = click.option(
    "--policy",
    help="Policy file: verify trust and plaintext allowances as the service would (default: crypto.policy "
         "if that file exists, else trust every producer key on file and accept no plaintext).",
)


@contextlib.contextmanager
def _sigterm_interrupts(ignore: bool = False):
    """Within: SIGTERM raises KeyboardInterrupt as Ctrl-C does, so tail closes its subscription; with
    ``ignore``, SIGINT and SIGTERM are held off instead (for the close). Only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signums = (signal.SIGINT, signal.SIGTERM) if ignore else (signal.SIGTERM,)
    previous = {signum: signal.getsignal(signum) for signum in signums}
    for signum in signums:
        signal.signal(signum, signal.SIG_IGN if ignore else interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _policy_path(given: str | None, config) -> str | None:
    """``--policy``, else the configured policy file where it exists."""
    if given:
        return given
    return config.crypto.policy if os.path.isfile(config.crypto.policy) else None


@command.command("tail")
@click.option("--router", "router_url", help="Router URL (default: router from config).")
@click.option("--destination", "destinations", multiple=True, required=True,
              help="Stream / queue / subject / topic to read, e.g. order; repeatable.")
@_KEY
@_KEYS_DIR
@_POLICY
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after this many events.")
@click.option("--follow", is_flag=True, help="Keep waiting for new events (Ctrl-C to stop).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@click.pass_context
def tail_command(ctx, router_url, destinations, key_files, keys_dir, policy, count, follow, as_json):
    """Show events on a router; with --key, decrypted and verified.

    \b
    Reads with a throw-away consumer group of its own; the group is
    ephemeral, so nothing of it stays on the broker after tail ends.
    Exit code 1 if an event failed verification or decryption.

    \b
    Examples:
      strangler events tail --router file://./strangler-events --destination order
      strangler events tail --router redis://127.0.0.1:6379/0 --destination order \\
          --key .strangler/keys/billing-1.private.jwk --json
    """
    from outbox.routers import RouterError, masked_url, open_subscription, supports_ephemeral

    config = load(ctx, router=router_url, crypto__keys_dir=keys_dir)
    opener = _opener(key_files, config.crypto.keys_dir, _policy_path(policy, config))
    group = f"strangler-tail-{uuid.uuid4().hex[:8]}"
    try:
        # Ephemeral: the group goes with the subscription. A third-party router without ephemeral
        # groups still works, with a durable group the user is told about.
        ephemeral = supports_ephemeral(config.router)
        if not ephemeral:
            click.echo(f"note: the {config.router.split(':', 1)[0]}:// router has no ephemeral groups: "
                       f"the consumer group {group!r} stays on the broker; delete it when done", err=True)
        subscription = open_subscription(config.router, group=group, destinations=list(destinations),
                                         ephemeral=ephemeral)
    except RouterError as exc:
        raise click.UsageError(str(exc)) from None
    seen, failed = 0, 0
    try:
        with _sigterm_interrupts():
            while count is None or seen < count:
                deliveries = subscription.receive(max_events=100, timeout=1.0)
                if not deliveries and not follow:
                    break
                for delivery in deliveries:
                    if delivery.envelope is None:
                        shown, ok = {"destination": delivery.destination, "location": delivery.location,
                                     "unreadable": delivery.malformed}, False
                    else:
                        shown, ok = _describe(delivery.envelope, opener)
                    failed += not ok
                    _echo(shown, as_json)
                    if ephemeral:
                        # Its own group, gone with it: acking takes nothing from anyone, and keeps the
                        # broker from stalling at its unacked limit (RabbitMQ's prefetch, JetStream's
                        # max_ack_pending) or sending events again after ack_wait.
                        delivery.ack()
                    seen += 1
                    if count is not None and seen >= count:
                        break
    except KeyboardInterrupt:
        pass
    except RouterError as exc:
        raise Problems(str(exc)) from None
    finally:
        with _sigterm_interrupts(ignore=True):  # a second Ctrl-C or SIGTERM does not cut the clean-up short
            subscription.close()
    if not seen:  # say so: a misspelt destination or folder reads as nothing at all
        click.echo(f"no events on {', '.join(destinations)} at {masked_url(config.router)}", err=True)
    if failed:
        raise Problems(f"{failed} of {seen} events failed verification or decryption, or were not CloudEvents")


@command.command("decrypt")
@click.argument("source", type=click.File("rb"), default="-")
@_KEY
@_KEYS_DIR
@_POLICY
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event, with its attributes.")
@click.pass_context
def decrypt_command(ctx, source, key_files, keys_dir, policy, as_json):
    """Decrypt and verify CloudEvents (structured JSON, one per line) from SOURCE or stdin.

    \b
    Without --json, prints each event's decrypted data as one JSON line.
    Exit code 1 if an event failed verification or decryption.

    \b
    Example:
      tail -n1 strangler-events/order.jsonl | strangler events decrypt --key billing-1.private.jwk
    """
    from outbox.envelope import Envelope, EnvelopeError

    if not key_files:
        raise click.UsageError("pass --key FILE: the private key of a service the event is encrypted for")
    config = load(ctx, crypto__keys_dir=keys_dir)
    opener = _opener(key_files, config.crypto.keys_dir, _policy_path(policy, config))
    failed = 0
    for number, line in enumerate(source, 1):
        if not line.strip():
            continue
        try:
            envelope = Envelope.from_json(line)
        except EnvelopeError as exc:
            raise click.UsageError(f"{getattr(source, 'name', 'stdin')}: line {number}: {exc}") from None
        shown, ok = _describe(envelope, opener)
        if not ok:
            failed += 1
            click.echo(f"line {number}: {shown['rejected']['error']}", err=True)
            continue
        click.echo(json.dumps(shown if as_json else shown.get("data"), ensure_ascii=False))
    if failed:
        raise Problems(f"{failed} event(s) failed verification or decryption")


@command.command("trace")
@click.argument("event_id")
@click.option("--db", "db_url", help="Monolith database holding the outbox (default: db from config).")
@click.option("--router", "router_url", default=None,
              help="Also find the event on this router (file:// or redis://) and the groups that read it "
                   "(default: router from config, when it is one of those).")
@click.option("--inbox-db", "inbox_urls", multiple=True,
              help="A service database with the inbox, to see who handled the event; repeatable.")
@click.option("--destination", "destinations", multiple=True,
              help="Where to look on the router, named as consumers name it: the router URL's "
                   "destination_prefix goes before it (default: the destination of the event's aggregate).")
@click.option("--json", "as_json", is_flag=True, help="Print the journey as one JSON document.")
@click.pass_context
def trace_command(ctx, event_id, db_url, router_url, inbox_urls, destinations, as_json):
    """Show the journey of one event: emitted, published, on the broker, handled; with the latency of each hop.

    \b
    Reads only what strangler records (the outbox row, the broker, each
    service's inbox and dead letters): no tracing back-end needed. With a
    destination_prefix in the router URL, it reads the prefixed destinations
    the relay published to, as the consumers do. Without --router it reads
    the configured router when that is a redis:// router or a file:// folder
    that exists.
    Exit code 1 if the event is found nowhere.

    \b
    Example:
      strangler events trace 0193a6c2-7f1e-7b7a-9d4e-3f0c2b1a9e88 --db postgresql://shop@db/shop \\
          --router redis://127.0.0.1:6379/0 --inbox-db postgresql://billing@db/billing
    """
    from outbox.trace import TraceError, trace_event

    config = load(ctx, db=db_url)
    try:
        journey = trace_event(
            event_id,
            config.db or None,
            router_url=router_url or _traceable_router(config.router),
            inbox_urls=inbox_urls,
            table_name=config.outbox_table,
            destinations=destinations,
        )
    except TraceError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(journey.as_dict(), ensure_ascii=False))
    else:
        click.echo(f"event {event_id}  {journey.type or '?'}  {journey.aggregate or ''}".rstrip())
        if journey.traceparent:
            click.echo(f"  traceparent {journey.traceparent}")
        for hop in journey.hops:
            shown = hop.as_dict()
            latency = "" if hop.latency_seconds is None else f"  +{hop.latency_seconds * 1000:.1f} ms"
            extra = {k: v for k, v in shown.items() if k not in ("step", "at", "where", "latency_seconds") and v not in (None, "")}
            click.echo(f"  {hop.step:<13} {shown['at'] or '-':<28} {hop.where}{latency}")
            if extra:
                click.echo("                " + "  ".join(f"{k}={v}" for k, v in extra.items()))
        for note in journey.notes:
            click.echo(f"  note: {note}")
    if not journey.found:
        raise Problems(f"event {event_id} was found nowhere")


def _traceable_router(url: str) -> str | None:
    """The configured router, if a trace can look events up on it: Redis, or a file folder that exists.

    A router given with --router is always read (and an error if it cannot
    be); the configured one is read only where that can succeed, so a trace
    from the outbox alone still works beside a relay on NATS or RabbitMQ.
    """
    from outbox.routers import RouterError
    from outbox.routers.file import folder_of

    if url.startswith(("redis://", "rediss://")):
        return url
    if url.startswith("file://"):
        try:
            return url if folder_of(url).is_dir() else None
        except RouterError:
            return None
    return None


def _aggregate(value: str) -> tuple[str, str | None]:
    aggregate_type, sep, aggregate_id = value.partition(":")
    if not aggregate_type or (sep and not aggregate_id):
        raise click.BadParameter(f"{value!r}: expected TYPE or TYPE:ID, e.g. order or order:42",
                                 param_hint="--aggregate")
    return aggregate_type, aggregate_id if sep else None


_REPLAY_NOTE = ("consumers de-duplicate by event id (their inbox): events they already handled are skipped, "
                "so a replay is safe for them")


@command.command("replay")
@click.option("--db", "db_url", help="Database holding the outbox (default: db from config).")
@click.option("--router", "router_url", help="Router URL to publish to (default: router from config).")
@click.option("--since", help="Events emitted at or after this: an age (7d, 12h, 30m) or an RFC 3339 time.")
@click.option("--until", help="Events emitted before this: an age (7d, 12h, 30m) or an RFC 3339 time.")
@click.option("--type", "types", multiple=True,
              help="Event type, or a pattern with * and ?, e.g. 'shop.order.*'; repeatable.")
@click.option("--aggregate", "aggregates", multiple=True,
              help="Aggregate TYPE or TYPE:ID, e.g. order or order:42; repeatable.")
@click.option("--id", "ids", multiple=True, help="Event id; repeatable.")
@click.option("--position-from", type=click.IntRange(min=0), help="Lowest outbox position (inclusive).")
@click.option("--position-to", type=click.IntRange(min=0), help="Highest outbox position (inclusive).")
@click.option("--all", "everything", is_flag=True, help="Replay every published row (needed when no filter is given).")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many events (the summary says where to go on).")
@click.option("--batch", type=click.IntRange(min=1), help="Rows read and published per batch (default: relay.batch).")
@click.option("--dry-run", is_flag=True, help="Count what would be sent, by type and destination; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Write the summary as one JSON object.")
@click.pass_context
def replay_command(ctx, db_url, router_url, since, until, types, aggregates, ids, position_from, position_to,
                   everything, limit, batch, dry_run, as_json):
    """Publish already-published outbox rows again, as the relay would, in position order.

    \b
    Filters combine (all must hold; a repeated one is an alternative). Only
    published rows are replayed; the rows are never changed. Each event goes
    out as the relay sends it: sealed rows stay sealed, and with
    crypto.encrypt_at = 'relay' plaintext rows are sealed. Once an event of a
    key fails, that key's later events are held back, so order per key holds.
    A broker outage stops the replay; the summary says --position-from to go
    on. Consumers de-duplicate by event id (their inbox), so events they
    already handled are skipped: a replay is safe for them.
    Exit code 1 if an event could not be published.

    \b
    Examples:
      strangler events replay --db sqlite:///shop.db --router file://./events --since 2h --dry-run
      strangler events replay --db postgresql+psycopg://app@db/shop --router redis://127.0.0.1:6379/0 \\
          --type 'shop.order.*' --aggregate order:42 --since 2026-01-31T00:00:00Z --json
    """
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from outbox.replay import Selection, replay
    from outbox.routers import Destinations, RouterError, masked_url, open_router, split_destination_prefix

    from .outbox import _cutoff, engine_for
    from .relay import envelope_transform_for

    try:
        selection = Selection(
            since=_cutoff(since, "--since") if since else None,
            until=_cutoff(until, "--until") if until else None,
            types=types, aggregates=tuple(_aggregate(a) for a in aggregates), ids=ids,
            position_from=position_from, position_to=position_to,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if selection.everything and not everything:
        raise click.UsageError(
            "say what to replay: --since, --until, --type, --aggregate, --id, --position-from/--position-to, "
            "or --all for every published row"
        )
    config = load(ctx, db=db_url, router=router_url, relay__batch=batch)
    transform = envelope_transform_for(config)
    destinations = Destinations(prefix=split_destination_prefix(config.router)[1])
    engine = engine_for(config.db)
    router = None
    try:
        if not dry_run:
            try:
                router = open_router(config.router)
            except RouterError as exc:
                raise click.UsageError(f"--router {masked_url(config.router)!r}: {exc}") from None
        show_progress = not as_json and sys.stderr.isatty()

        def progress(result) -> None:
            if show_progress:
                click.echo(f"\r{result.selected} events, position {result.last_position}", nl=False, err=True)

        try:
            result = replay(engine, router, selection, table_name=config.outbox_table, batch=config.relay.batch,
                            limit=limit, envelope_transform=transform, destinations=destinations,
                            dry_run=dry_run, progress=progress)
        except (OperationalError, ProgrammingError) as exc:
            raise Problems(
                f"cannot read the outbox table {config.outbox_table!r}: {exc.orig}. "
                "Has 'strangler outbox migrate' run on this database?"
            ) from None
        if show_progress:
            click.echo("", err=True)
    finally:
        if router is not None:
            router.close()
        engine.dispose()
    target = masked_url(config.router)
    if as_json:
        click.echo(json.dumps({"router": target, **result.as_dict()}, ensure_ascii=False))
    else:
        _echo_replay(result, target)
    if not dry_run and result.published:
        click.echo(f"note: {_REPLAY_NOTE}", err=as_json)
    if result.stopped:
        raise Problems(f"stopped: {result.stopped}; go on with --position-from {result.resume_from}")
    if not result.ok:
        raise Problems(f"{result.failed} events failed and {result.held_back} were held back behind them")


def _echo_replay(result, target: str) -> None:
    if not result.selected:
        click.echo("no published rows match")
        return
    span = f"positions {result.first_position}-{result.last_position}, " \
           f"emitted {result.first_time.isoformat()} to {result.last_time.isoformat()}"
    if result.dry_run:
        click.echo(f"dry run: {result.selected} events would be replayed to {target} ({span}); nothing sent")
    else:
        click.echo(f"replayed {result.published} of {result.selected} events to {target} "
                   f"in {result.batches} batches ({span})")
    width = max(map(len, [*result.by_type, *result.by_destination]), default=0)
    for label, counts in (("type", result.by_type), ("destination", result.by_destination)):
        if counts:
            click.echo(f"  by {label}:")
            for name, count in sorted(counts.items()):
                click.echo(f"    {name:<{width}}  {count}")
    if result.failed or result.held_back:
        click.echo(f"  failed {result.failed}, held back behind them {result.held_back}")
        for error in result.errors:
            click.echo(f"    #{error['position']} {error['id']}: {error['error']}")
    if result.resume_from is not None and not result.stopped:
        click.echo(f"  more rows match: go on with --position-from {result.resume_from}")
