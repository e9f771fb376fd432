"""A third-party router: a package that declares a ``strangler.routers`` entry point, nothing else.

The test writes a tiny package into a folder with its ``.dist-info`` (what pip
would install), puts that folder on the path, and uses the router by its
scheme: through ``open_router``, through the conformance suite, and through
``strangler relay --router memo://…`` in a separate process. Nothing in
strangler changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from outbox.routers import available_schemes, open_router
from outbox.testing.conformance import RouterConformance, make_event
from tests.outbox.plugin_helpers import write_distribution
from tests.outbox.relay_helpers import emit_events, migrated_engine, pending_count

PLUGIN = '''
"""memo:// — a third-party router that appends structured CloudEvents to one file per destination."""
import json, os
from outbox.envelope import Envelope
from outbox.routers.base import HELD_BACK, Delivery, PublishResult


class MemoRouter:
    def __init__(self, url, *, destinations=None, max_bytes=1 << 20):
        self.folder = url[len("memo://"):]
        os.makedirs(self.folder, exist_ok=True)
        self.destinations = destinations
        self.max_bytes = max_bytes

    def publish(self, batch):
        out, failed = [], set()
        for event in batch:
            key = (event.aggregatetype, event.partitionkey)
            line = event.to_json()
            if key in failed:
                out.append(PublishResult(event.id, HELD_BACK))
            elif len(line) > int(self.max_bytes):
                failed.add(key)
                out.append(PublishResult(event.id, f"{len(line)} bytes is over max_bytes", True))
            else:
                with open(os.path.join(self.folder, self.destinations.for_event(event) + ".memo"), "ab") as f:
                    f.write(line + b"\\n")
                    f.flush()
                    os.fsync(f.fileno())
                out.append(PublishResult(event.id))
        return out

    def close(self):
        pass

    @classmethod
    def subscribe(cls, url, *, group, destinations, **options):
        return MemoSubscription(url[len("memo://"):], group, destinations)


class MemoSubscription:
    def __init__(self, folder, group, destinations):
        self.folder, self.group, self.destinations = folder, group, destinations
        self.offsets_path = os.path.join(folder, f".{group}.offsets")
        self.acked = json.load(open(self.offsets_path)) if os.path.exists(self.offsets_path) else {}
        self.handed = {d: self.acked.get(d, 0) for d in destinations}

    def receive(self, max_events=100, timeout=1.0):
        import time
        deadline = time.monotonic() + timeout
        while True:
            out = []
            for d in self.destinations:
                path = os.path.join(self.folder, d + ".memo")
                lines = open(path, "rb").read().splitlines() if os.path.exists(path) else []
                for n in range(self.handed[d], min(len(lines), self.handed[d] + max_events - len(out))):
                    out.append(Delivery(Envelope.from_json(lines[n]), d, _ack=lambda d=d, n=n: self._ack(d, n),
                                        _nack=lambda d=d: self.handed.__setitem__(d, self.acked.get(d, 0))))
                    self.handed[d] = n + 1
            if out or time.monotonic() > deadline:
                return out
            time.sleep(0.05)

    def _ack(self, d, n):
        self.acked[d] = max(self.acked.get(d, 0), n + 1)
        json.dump(self.acked, open(self.offsets_path, "w"))

    def close(self):
        pass
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """A folder holding the package ``strangler_memo`` and its dist-info with the entry point."""
    site = write_distribution(tmp_path_factory.mktemp("site"), "strangler_memo", PLUGIN,
                              "[strangler.routers]\nmemo = strangler_memo:MemoRouter\n")
    sys.path.insert(0, str(site))
    yield site
    sys.path.remove(str(site))
    sys.modules.pop("strangler_memo", None)


def test_the_scheme_is_found_through_the_entry_point(plugin_path, tmp_path):
    assert "memo" in available_schemes()
    router = open_router(f"memo://{tmp_path}/out")
    assert type(router).__module__ == "strangler_memo"
    assert router.publish([make_event()])[0].ok


class TestMemoRouterConformance(RouterConformance):
    """The plugin runs the same suite as strangler's own routers."""

    # Not collected: an in-memory router has no broker to be unreachable.
    test_an_unreachable_broker_fails_the_batch_transiently_without_raising = None

    @pytest.fixture
    def router_url(self, plugin_path, tmp_path):
        return f"memo://{tmp_path}/memo"

    def read_published(self, router_url, destination, count):
        from cloudevents.core.bindings import http

        lines = Path(router_url[len("memo://"):], destination + ".memo").read_bytes().splitlines()
        headers = {"content-type": "application/cloudevents+json"}
        return [http.from_structured_event(http.HTTPMessage(headers=headers, body=line)) for line in lines[:count]]


def test_strangler_relay_uses_the_plugin_with_no_change_to_strangler(plugin_path, sqlite_url, tmp_path):
    engine = migrated_engine(sqlite_url)
    emit_events(engine, ["a", "b"], per_key=3)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", "from toolkit.cli import main; main()", "relay", "--db", sqlite_url,
         "--router", f"memo://{tmp_path}/out", "--once"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "out" / "order.memo").read_bytes().splitlines()
    assert [json.loads(line)["data"]["n"] for line in lines] == [0, 0, 1, 1, 2, 2]
    assert pending_count(engine) == 0
    engine.dispose()
