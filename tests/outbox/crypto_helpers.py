"""Shared set-up for the crypto and consumer tests: a keys folder, a policy, events to seal."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from pathlib import Path

from outbox.crypto import KeyRing, Opener, Sealer, new_key
from outbox.crypto.policy import load_policy
from outbox.envelope import Envelope, format_time

POLICY = """
[readers]
"shop.order.*" = ["billing", "shipping"]
"shop.customer.*" = ["crm"]

[plaintext]
types = ["shop.heartbeat"]

[trust]
billing = ["shop"]
shipping = ["shop"]
crm = ["shop-1"]
intruder = ["shop"]
"""


@dataclasses.dataclass
class World:
    """A producer and its consumers sharing one keys folder (as in development)."""

    keys: Path
    policy_path: Path

    @property
    def policy(self):
        return load_policy(self.policy_path)

    def sealer(self, **options) -> Sealer:
        return Sealer(KeyRing.load(self.keys), self.policy, **options)

    def opener(self, service: str, **options) -> Opener:
        return Opener(service, KeyRing.load(self.keys), self.policy, **options)


def make_world(tmp_path: Path, policy: str = POLICY) -> World:
    keys = tmp_path / "keys"
    new_key(keys, "shop", producer=True)
    new_key(keys, "billing")
    new_key(keys, "shipping")
    new_key(keys, "crm", curve="X25519")
    new_key(keys, "intruder")
    policy_path = tmp_path / "strangler-policy.toml"
    policy_path.write_text(policy)
    return World(keys, policy_path)


def attributes(type_: str = "shop.order.created", subject: str = "42", **extra) -> dict[str, str]:
    attrs = {
        "id": str(uuid.uuid4()),
        "type": type_,
        "source": "/shop",
        "subject": subject,
        "time": format_time(dt.datetime.now(dt.timezone.utc)),
    }
    attrs.update(extra)
    return attrs


def sealed_envelope(sealer: Sealer, data: dict, type_: str = "shop.order.created", **attrs) -> Envelope:
    """Seal ``data`` as emit would and return the envelope the relay would publish."""
    a = attributes(type_, **attrs)
    content_type, payload = sealer.seal(a, json.dumps(data).encode())
    return Envelope.from_attributes(
        {**a, "specversion": "1.0", "datacontenttype": content_type, "aggregatetype": type_.split(".")[1],
         "partitionkey": a["subject"]},
        payload,
    )


def plain_event(n: int, data: dict | None = None) -> Envelope:
    """An unencrypted order event, order ``n`` (its subject); data ``{"id": n}`` unless given."""
    a = attributes(subject=str(n))
    return Envelope.from_attributes(
        {**a, "specversion": "1.0", "datacontenttype": "application/json", "aggregatetype": "order",
         "partitionkey": a["subject"]},
        json.dumps({"id": n} if data is None else data).encode(),
    )
