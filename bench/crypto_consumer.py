"""Consumer-side verify + decrypt rate against a bare Ed25519 verify loop, measured in the same run.

  bare_verify   cryptography's Ed25519PublicKey.verify over a JWS signing input of the same size
  open          outbox.crypto.Opener.open on published envelopes, content-key window on (1000)
  open_w0       the same on events sealed with window 0 (one ECDH unwrap per event)
Each event has two recipients (billing, shipping); billing opens. Interleaved rounds, medians.

Usage:
  python bench/crypto_consumer.py [--seconds 2] [--rounds 5] [--events 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from outbox.crypto import KeyRing, Opener, Sealer, new_key
from outbox.crypto.policy import parse_policy
from outbox.envelope import Envelope

POLICY = {"readers": {"shop.order.*": ["billing", "shipping"]}, "trust": {"billing": ["shop"]}}
DATA = json.dumps({"id": 42, "customer": "ann@example.com", "total": "19.90", "status": "new"}).encode()


def envelopes(sealer, n):
    import datetime as dt
    import uuid

    out = []
    for i in range(n):
        attrs = {"specversion": "1.0", "id": str(uuid.uuid4()), "type": "shop.order.created", "source": "/shop",
                 "subject": str(i), "time": dt.datetime.now(dt.timezone.utc).isoformat()}
        content_type, payload = sealer.seal(attrs, DATA)
        out.append(Envelope.from_attributes({**attrs, "datacontenttype": content_type}, payload))
    return out


def rate(fn, items, seconds):
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for item in items[:200]:
            fn(item)
        count += min(200, len(items))
        items = items[200:] + items[:200]
    return count / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp()) / "keys"
    new_key(folder, "shop", producer=True)
    new_key(folder, "billing")
    new_key(folder, "shipping")
    policy = parse_policy(POLICY)
    windowed = envelopes(Sealer(KeyRing.load(folder), policy, reuse_events=1000), args.events)
    per_event = envelopes(Sealer(KeyRing.load(folder), policy, reuse_events=0), min(args.events, 1000))
    opener = Opener("billing", KeyRing.load(folder), policy, reload_seconds=3600)
    cold = Opener("billing", KeyRing.load(folder), policy, reload_seconds=3600)

    def open_cold(envelope):
        cold._ceks.clear()  # window 0: every event's content key is new, so unwrap (ECDH) every time
        return cold.open(envelope)

    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    jws_input = b"h" * 220 + b"." + b"p" * 120  # the size of the JWS signing input of DATA
    signed = [(jws_input, key.sign(jws_input))] * 200

    variants = {
        "bare_verify": (lambda item: public.verify(item[1], item[0]), signed),
        "open": (opener.open, windowed),
        "open_w0": (open_cold, per_event),
    }
    for fn, items in variants.values():
        rate(fn, items, 0.2)
    results = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (fn, items) in variants.items():
            results[name].append(rate(fn, items, args.seconds))
    med = {name: statistics.median(v) for name, v in results.items()}
    print(f"events/s, median of {args.rounds} rounds of {args.seconds}s")
    for name in variants:
        print(f"  {name:12s} {med[name]:8.0f}/s  {1e6 / med[name]:6.1f} µs/event  "
              f"ratio to bare verify {med[name] / med['bare_verify']:.2f}")


if __name__ == "__main__":
    main()
