"""``strangler watch``: alert on suspicious activity in the event flow, from metadata alone.

A thin layer over ``outbox.watch``: load the rules, open the sinks, read the
router as the watch's own consumer group, and (for the gap rule) the outbox.
"""

from __future__ import annotations

import json
import signal
import threading

import click

from ..context import Problems, load


@click.command(name="watch")
@click.option("--router", "router_url", help="Router URL (default: router from config).")
@click.option("--rules", "rules_path", help="Rules file (TOML; default: watch.rules from config).")
@click.option(
    "--destination",
    "destinations",
    multiple=True,
    required=True,
    help="Stream / queue / subject / topic to watch, e.g. order; repeatable.",
)
@click.option(
    "--db", "db_url", help="Monolith database, for the gap rule (default: db from config)."
)
@click.option("--group", help="The watch's own consumer group (default: watch.group from config).")
@click.option(
    "--webhook", help="Also POST each alert as JSON to this URL (default: watch.webhook)."
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve strangler_watch_alerts_total on this port (default: watch.metrics_port; 0: off).",
)
@click.option(
    "--key",
    "key_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="A reader's private key file: lets source and key rules see the producer's signing key.",
)
@click.option("--keys-dir", help="Folder with the producers' public keys (with --key).")
@click.option("--once", is_flag=True, help="Read what is on the router, run every check, and exit.")
@click.option("--fail-on-alert", is_flag=True, help="Exit 1 if any alert was raised.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.pass_context
def command(
    ctx,
    router_url,
    rules_path,
    destinations,
    db_url,
    group,
    webhook,
    metrics_port,
    key_files,
    keys_dir,
    once,
    fail_on_alert,
    as_json,
):
    """Watch the events on a router and alert on suspicious activity.

    \b
    Rules (TOML) catch: a type's rate above a threshold, a type from an unexpected
    source or producer key, an unknown or retired key, a burst on one subject, a
    consumer group reading a type the policy does not give it, and a gap between
    what the outbox published and what the broker holds. No key is needed.
    Alerts go to stderr as JSON lines, to --webhook, and to a Prometheus counter.
    Exit code 1 with --fail-on-alert when an alert was raised; 2 on bad rules.

    \b
    Examples:
      strangler watch --router redis://127.0.0.1:6379/0 --rules strangler-watch.toml \\
          --destination order --destination customer --db postgresql://shop@db/shop
      strangler watch --router file://./strangler-events --rules strangler-watch.toml \\
          --destination order --once --fail-on-alert
    """
    from outbox.routers import RouterError
    from outbox.signals import stop_on_signal
    from outbox.watch import JsonLines, PrometheusCounter, RulesError, Watch, Webhook, load_rules
    from outbox.watch.rules import GapRule, GroupRule
    from outbox.watch.run import run_watch
    from outbox.watch.sources import OutboxLedger, SourceError, group_lister

    config = load(
        ctx,
        router=router_url,
        db=db_url,
        watch__rules=rules_path,
        watch__group=group,
        watch__webhook=webhook,
        watch__metrics_port=metrics_port,
        crypto__keys_dir=keys_dir,
    )
    try:
        rules = load_rules(config.watch.rules)
    except RulesError as exc:
        raise click.UsageError(str(exc)) from None

    sinks = [JsonLines()]
    if config.watch.webhook:
        try:
            sinks.append(Webhook(config.watch.webhook))
        except ValueError as exc:
            raise click.UsageError(f"--webhook: {exc}") from None
    sinks.append(PrometheusCounter())
    if config.watch.metrics_port:
        try:
            from prometheus_client import start_http_server
        except ImportError:
            raise click.UsageError(
                "--metrics-port needs prometheus-client: pip install 'strangler[all]'"
            ) from None
        start_http_server(config.watch.metrics_port)

    ledger = None
    if any(isinstance(r, GapRule) for r in rules):
        if not config.db:
            raise click.UsageError(
                "the gap rule compares with the outbox: pass --db URL (or set db in config)"
            )
        from outbox.routers import Destinations, split_destination_prefix

        ledger = OutboxLedger(config.db, table_name=config.outbox_table, destinations=destinations,
                              routing=Destinations(prefix=split_destination_prefix(config.router)[1]))
    lister = None
    if any(isinstance(r, GroupRule) for r in rules):
        try:
            lister = group_lister(config.router, destinations)
        except (SourceError, RouterError) as exc:  # RouterError: an unknown option in the URL
            raise click.UsageError(str(exc)) from None
        if lister is None:
            raise click.UsageError(
                f"a groups rule needs the broker's consumer groups, which strangler reads on file://, "
                f"redis:// and nats:// routers, not on {config.router.split('://', 1)[0]}://; remove the rule for this router"
            )

    producer_kid_of = None
    if key_files:
        from outbox.watch.sources import signer_of

        from .events import _opener

        producer_kid_of = signer_of(_opener(tuple(key_files), config.crypto.keys_dir, None))

    try:
        watch = Watch(rules, sinks=sinks, group_lister=lister, ledger=ledger)
    except RulesError as exc:
        raise click.UsageError(str(exc)) from None

    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        previous = {
            s: signal.signal(s, stop_on_signal(stop.set)) for s in (signal.SIGTERM, signal.SIGINT)
        }
    else:
        previous = {}
    try:
        seen = run_watch(
            watch,
            config.router,
            destinations,
            group=config.watch.group,
            once=once,
            stop=stop,
            producer_kid_of=producer_kid_of,
        )
    except RouterError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if ledger is not None:
            ledger.close()
        getattr(lister, "close", lambda: None)()

    summary = {"observed": seen, "alerts": watch.alerts_raised, "rules": [r.name for r in rules]}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(
            f"watched {seen} events with {len(rules)} rules: {watch.alerts_raised} alerts", err=True
        )
    if fail_on_alert and watch.alerts_raised:
        raise Problems(f"{watch.alerts_raised} alert(s) raised")
