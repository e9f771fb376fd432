"""Run the notifications service.

    python -m sample_monolith.services.notifications \\
        --db sqlite:///notifications.db --router file://./events \\
        --keys-dir keys --policy strangler-policy.toml --spool mail/notifications.jsonl

Stops on SIGTERM/SIGINT after the event in hand, or with ``--until-idle`` once
no event arrives within ``--poll`` seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading

from sqlalchemy import create_engine

from .service import build_consumer, dispatch_mail, migrate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sample_monolith.services.notifications", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="the service's own database URL")
    parser.add_argument("--router", required=True, help="router URL to read from, e.g. file://./events")
    parser.add_argument("--keys-dir", help="folder with this service's private key and the producer's public key")
    parser.add_argument("--policy", help="the policy file (which producers this service trusts)")
    parser.add_argument("--spool", required=True, help="the mail spool file to append sent mail to")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds to wait for events per receive")
    parser.add_argument("--until-idle", action="store_true", help="exit once no event arrives within --poll")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s notifications %(levelname)s %(message)s")

    engine = create_engine(args.db)
    migrate(engine)
    consumer = build_consumer(engine, keys_dir=args.keys_dir, policy=args.policy)
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


if __name__ == "__main__":
    sys.exit(main())
