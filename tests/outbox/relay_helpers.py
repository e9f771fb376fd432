"""Shared pieces of the relay tests: a migrated outbox, rows to relay, routers that misbehave on purpose."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import create_engine, select

from outbox import emit
from outbox import migrate as outbox_migrate
from outbox.envelope import Envelope
from outbox.routers.base import HELD_BACK, PublishResult
from outbox.routers.file import FileRouter
from outbox.table import get_outbox_table

outbox = get_outbox_table()


def migrated_engine(url: str):
    """Migrate the outbox on ``url`` and return an engine."""
    outbox_migrate.upgrade(outbox_migrate.standalone_config(url))
    return create_engine(url)


def emit_events(engine, keys: Sequence[str], per_key: int, *, aggregate: str = "order", start: int = 0) -> dict:
    """Emit ``per_key`` events per key, interleaved across keys; return key → data ``n`` in emit order."""
    sent: dict[str, list[int]] = {k: [] for k in keys}
    with engine.begin() as conn:
        for n in range(start, start + per_key):
            for key in keys:
                emit(conn, f"shop.{aggregate}.changed", aggregate=aggregate, key=key, data={"key": key, "n": n})
                sent[key].append(n)
    return sent


def file_events(folder: Path, destination: str = "order") -> list[Envelope]:
    """Return every event the file router wrote for ``destination``, in file order."""
    path = Path(folder) / f"{destination}.jsonl"
    if not path.exists():
        return []
    return [Envelope.from_json(line) for line in path.read_bytes().splitlines()]


def first_seen_order(events: Sequence[Envelope]) -> dict[str, list[int]]:
    """Key → data ``n`` in first-delivery order, duplicates (at least once) dropped."""
    seen: set[str] = set()
    out: dict[str, list[int]] = {}
    for event in events:
        if event.id in seen:
            continue
        seen.add(event.id)
        out.setdefault(event.partitionkey, []).append(json.loads(event.data)["n"])
    return out


def publish(router_url: str, envelopes: Sequence[Envelope]) -> None:
    """Publish ``envelopes`` to ``router_url`` as the relay would, and check the broker took every one."""
    from outbox.routers import open_router

    router = open_router(router_url)
    try:
        results = router.publish(envelopes)
    finally:
        router.close()
    assert all(r.ok for r in results), results


def pending_count(engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(
            select(outbox.c.position).where(outbox.c.published_at.is_(None), outbox.c.dead_at.is_(None))
        ).all())


def rows(engine):
    with engine.connect() as conn:
        return conn.execute(select(outbox).order_by(outbox.c.position)).all()


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FlakyRouter(FileRouter):
    """A file router that refuses some events: permanently when ``poison(event)``, or all while ``down``."""

    def __init__(self, url: str, poison: Callable[[Envelope], bool] = lambda e: False, **options):
        super().__init__(url, **options)
        self.poison = poison
        self.down = False
        self.calls = 0

    def publish(self, batch):
        self.calls += 1
        if self.down:
            return [PublishResult(e.id, "broker down (test)") for e in batch]
        failed, good, out = set(), [], {}
        for e in batch:  # as a real router: a failed key's later events are held back
            key = (e.aggregatetype, e.partitionkey)
            if key in failed:
                out[e.id] = PublishResult(e.id, HELD_BACK)
            elif self.poison(e):
                failed.add(key)
                out[e.id] = PublishResult(e.id, "rejected: poison (test)", True)
            else:
                good.append(e)
        out.update({r.event_id: r for r in super().publish(good)})
        return [out[e.id] for e in batch]
