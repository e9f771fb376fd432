"""Run the notifications service.

    python -m sample_monolith.services.notifications \\
        --db sqlite:///notifications.db --router file://./events \\
        --keys-dir keys --policy strangler-policy.toml --spool mail/notifications.jsonl

Stops on SIGTERM/SIGINT after the event in hand, or with ``--until-idle`` once
no event arrives within ``--poll`` seconds.

With ``--retry-dead-letters`` (and no ``--router``) it reads no broker: it hands
the events it could not handle before (its dead letters) to its handler again,
once their cause is fixed (a key or policy it lacked, a bug), sends their mail,
prints what each came to, and exits: 1 if any is still not handled.

--keys-dir and --policy go together: with them the service verifies and
decrypts the order events, and refuses to start when the keys folder holds no
private key of notifications (create it with 'strangler keys new notifications').
Without both, it reads only plaintext events (encrypt_at = "off", development)
and dead-letters every encrypted one as rejected.

A setup error (a missing key or policy, a database it cannot open, an
unreachable broker) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import threading

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import OperationalError

from outbox.crypto import KeyFileError, PolicyError
from outbox.routers import RouterError

from .service import build_consumer, dispatch_mail, migrate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sample_monolith.services.notifications", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="the service's own database URL")
    parser.add_argument("--router", help="router URL to read from, e.g. file://./events")
    parser.add_argument("--keys-dir", help="folder with this service's private key and the producer's public key "
                                           "(with --policy; without both, only plaintext events are read)")
    parser.add_argument("--policy", help="the policy file: which events this service reads and which producers "
                                         "it trusts (with --keys-dir)")
    parser.add_argument("--spool", required=True, help="the mail spool file to append sent mail to")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds to wait for events per receive")
    parser.add_argument("--until-idle", action="store_true", help="exit once no event arrives within --poll")
    parser.add_argument("--retry-dead-letters", action="store_true",
                        help="hand the dead letters to the handler again, send their mail, and exit (no --router)")
    args = parser.parse_args(argv)
    if bool(args.keys_dir) != bool(args.policy):
        parser.error("--keys-dir and --policy go together: pass both to read encrypted events, or neither")
    if bool(args.router) == args.retry_dead_letters:
        parser.error("pass --router to serve, or --retry-dead-letters to retry what died, one of them")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s notifications %(levelname)s %(message)s")
    try:
        return retry_dead_letters(args) if args.retry_dead_letters else serve(args)
    except SETUP_ERRORS as exc:
        print(f"notifications: {exc}", file=sys.stderr)
        return 2


#: Errors of the service's setup (keys, policy, broker, arguments): said in one line, not a traceback.
SETUP_ERRORS = (KeyFileError, PolicyError, RouterError, ValueError)


def open_database(url: str) -> Engine:
    """The service's database, its tables and inbox created; one that cannot be opened is a setup error."""
    engine = create_engine(url)
    try:
        migrate(engine)
    except OperationalError as exc:
        engine.dispose()
        raise ValueError(f"cannot open the database {url}: {exc.orig}") from None
    except BaseException:
        engine.dispose()
        raise
    return engine


def serve(args: argparse.Namespace) -> int:
    """Run the consumer and the mail dispatcher until stopped; print the counts."""
    engine = open_database(args.db)
    try:
        consumer = build_consumer(engine, keys_dir=args.keys_dir, policy=args.policy)
    except BaseException:
        engine.dispose()
        raise
    done = threading.Event()

    def dispatcher() -> None:
        while not done.wait(0.2):
            dispatch_mail(engine, args.spool)

    thread = threading.Thread(target=dispatcher, name="mail-dispatcher", daemon=True)
    thread.start()
    try:
        stats = consumer.run(args.router, destinations=["order"], poll=args.poll, until_idle=args.until_idle)
    finally:
        done.set()
        thread.join()
        dispatch_mail(engine, args.spool)  # what the last batch decided
        engine.dispose()
    print(json.dumps({"service": "notifications", **stats.__dict__}), file=sys.stderr)
    return 0


def retry_dead_letters(args: argparse.Namespace) -> int:
    """Retry every dead letter through the handler, send the mail it decided; 1 if any is still not handled."""
    engine = open_database(args.db)
    try:
        consumer = build_consumer(engine, keys_dir=args.keys_dir, policy=args.policy)
        results = consumer.retry_dead_letters()
        dispatch_mail(engine, args.spool)
    finally:
        engine.dispose()
    for result in results:
        print(json.dumps(dataclasses.asdict(result)))
    return 0 if all(result.outcome in ("handled", "duplicate") for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
