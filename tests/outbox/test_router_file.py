"""The file router runs the same conformance suite as the broker routers."""

from __future__ import annotations

import json

import pytest
from cloudevents.core.bindings import http

from outbox.testing.conformance import RouterConformance


class TestFileRouter(RouterConformance):
    # Not collected: a folder on local disk has no broker to be unreachable.
    test_an_unreachable_broker_fails_the_batch_transiently_without_raising = None

    @pytest.fixture
    def router_url(self, tmp_path):
        return f"file://{tmp_path}/events"

    def read_published(self, router_url, destination, count):
        path = router_url[len("file://"):] + f"/{destination}.jsonl"
        with open(path, "rb") as handle:
            lines = handle.read().splitlines()[:count]
        headers = {"content-type": "application/cloudevents+json"}
        return [http.from_structured_event(http.HTTPMessage(headers=headers, body=line)) for line in lines
                if json.loads(line)]
