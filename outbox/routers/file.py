"""``file://`` router: JSON Lines files, one per destination, for local use and the walkthrough.

``file://./events`` (relative to the working folder) or ``file:///var/lib/events``.
Each line is one CloudEvent in the JSON event format (structured mode). An
append is reported published only after ``fsync``. Several relays may append
at once: each batch takes an exclusive ``flock`` on the file. Consumers keep
their read offset per group in ``.groups/<group>/<destination>.offset``,
written after ack, so a restarted consumer resumes where it acknowledged.
An ephemeral group (``open_subscription(..., ephemeral=True)``) keeps its
offsets in memory only: nothing is written under ``.groups``.

Options (keyword or URL query, ``file://./events?max_bytes=1048576``):
``max_bytes`` (default 16 MiB; a longer line fails permanently before it is
written). The query is never part of the folder's name.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from pathlib import Path
from typing import Sequence

from ..envelope import Envelope
from .base import HELD_BACK, NOT_A_CLOUDEVENT, Delivery, Destinations, PublishResult, RouterError
from .common import as_int, masked_url, split_options

OPTIONS = ("max_bytes",)
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
DEFAULT_MAX_BYTES = 16 * 1024 * 1024


def folder_of(url: str) -> Path:
    """Return the folder a ``file://`` URL names; its query (the options) is not part of it."""
    if not url.startswith("file://"):
        raise RouterError(f"{masked_url(url)!r} is not a file:// URL")
    rest = url[len("file://"):].partition("?")[0]
    if not rest:
        raise RouterError(f"{masked_url(url)!r} names no folder; e.g. file://./events or file:///var/lib/events")
    if rest.startswith("localhost/"):
        rest = rest[len("localhost"):]
    return Path(rest)


def _file_name(destination: str) -> str:
    return _SAFE.sub("_", destination) + ".jsonl"


class FileRouter:
    """Appends events to ``<folder>/<destination>.jsonl``."""

    def __init__(self, url: str, *, destinations: Destinations | None = None, **options):
        url, opts = split_options(url, options, OPTIONS)
        self.folder = folder_of(url)
        self.destinations = destinations or Destinations()
        self.max_bytes = as_int(opts.get("max_bytes", DEFAULT_MAX_BYTES), "max_bytes", url)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RouterError(f"file router: cannot create {self.folder}: {exc}") from exc

    def publish(self, batch: Sequence[Envelope]) -> list[PublishResult]:
        """Append ``batch``; every event is ok only once its file is fsynced."""
        results: dict[int, PublishResult] = {}
        by_destination: dict[str, list[tuple[int, bytes]]] = {}
        failed_keys: set[tuple[str, str]] = set()
        for index, event in enumerate(batch):
            if (event.aggregatetype, event.partitionkey) in failed_keys:
                results[index] = PublishResult(event.id, HELD_BACK)
                continue
            line = event.to_json() + b"\n"
            if len(line) > self.max_bytes:
                failed_keys.add((event.aggregatetype, event.partitionkey))
                results[index] = PublishResult(
                    event.id, f"event is {len(line)} bytes, over the file router's {self.max_bytes}", True
                )
                continue
            by_destination.setdefault(self.destinations.for_event(event), []).append((index, line))
        for destination, lines in by_destination.items():
            path = self.folder / _file_name(destination)
            try:
                with open(path, "ab") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                    try:
                        handle.write(b"".join(line for _, line in lines))
                        handle.flush()
                        os.fsync(handle.fileno())
                    finally:
                        fcntl.flock(handle, fcntl.LOCK_UN)
            except OSError as exc:
                for index, _ in lines:
                    results[index] = PublishResult(batch[index].id, f"cannot append to {path}: {exc}")
                continue
            for index, _ in lines:
                results[index] = PublishResult(batch[index].id)
        return [results[i] for i in range(len(batch))]

    def close(self) -> None:
        """Nothing to release: files are opened per batch."""

    #: ``open_subscription(..., ephemeral=True)`` keeps the group's offsets in memory: nothing is written.
    EPHEMERAL_GROUPS = True

    @classmethod
    def subscribe(cls, url: str, *, group: str, destinations: list[str], ephemeral: bool = False,
                  **options) -> "FileSubscription":
        """Open a consumer group over the files of ``destinations``; ``ephemeral``: offsets in memory only."""
        url, _ = split_options(url, options, OPTIONS)
        return FileSubscription(folder_of(url), group, destinations, ephemeral=ephemeral)


class FileSubscription:
    """Tails destination files for one consumer group, resuming at the acknowledged offset."""

    def __init__(self, folder: Path, group: str, destinations: list[str], *, ephemeral: bool = False):
        if not destinations:
            raise RouterError("file subscription: name at least one destination")
        self.folder = folder
        self.group_dir = folder / ".groups" / _SAFE.sub("_", group)
        self.ephemeral = ephemeral
        if not ephemeral:
            self.group_dir.mkdir(parents=True, exist_ok=True)
        self.destinations = list(destinations)
        self._read_pos = {d: 0 if ephemeral else self._committed(d) for d in self.destinations}
        # Per destination: [start, end, acked] of deliveries handed out and not yet committed.
        self._inflight: dict[str, list[list]] = {d: [] for d in self.destinations}

    def _offset_path(self, destination: str) -> Path:
        return self.group_dir / (_SAFE.sub("_", destination) + ".offset")

    def _committed(self, destination: str) -> int:
        try:
            return int(self._offset_path(destination).read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _commit(self, destination: str) -> None:
        inflight = self._inflight[destination]
        advanced = None
        while inflight and inflight[0][2]:
            advanced = inflight.pop(0)[1]
        if advanced is not None and not self.ephemeral:
            path = self._offset_path(destination)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(str(advanced))
            os.replace(tmp, path)

    def receive(self, max_events: int = 100, timeout: float = 1.0) -> list[Delivery]:
        """Return up to ``max_events`` new lines as deliveries, polling until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            out: list[Delivery] = []
            for destination in self.destinations:
                out.extend(self._read(destination, max_events - len(out)))
                if len(out) >= max_events:
                    break
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _read(self, destination: str, limit: int) -> list[Delivery]:
        path = self.folder / _file_name(destination)
        if limit <= 0 or not path.exists():
            return []
        out = []
        with open(path, "rb") as handle:
            handle.seek(self._read_pos[destination])
            while len(out) < limit:
                start = handle.tell()
                line = handle.readline()
                if not line.endswith(b"\n"):  # nothing more, or a line still being written
                    break
                entry = [start, handle.tell(), False]
                self._inflight[destination].append(entry)
                self._read_pos[destination] = entry[1]
                ack = lambda d=destination, e=entry: self._ack(d, e)  # noqa: E731
                nack = lambda d=destination, e=entry: self._nack(d, e)  # noqa: E731
                try:
                    envelope = Envelope.from_structured(json.loads(line))
                except NOT_A_CLOUDEVENT as exc:
                    out.append(Delivery.unreadable(line, exc, destination, location=f"{path} byte {start}",
                                                   ack=ack, nack=nack))
                    continue
                out.append(Delivery(envelope=envelope, destination=destination, _ack=ack, _nack=nack))
        return out

    def _ack(self, destination: str, entry: list) -> None:
        entry[2] = True
        self._commit(destination)

    def _nack(self, destination: str, entry: list) -> None:
        # Rewind: this line and every later one handed out are read again.
        inflight = self._inflight[destination]
        if entry in inflight:
            del inflight[inflight.index(entry):]
            self._read_pos[destination] = entry[0]

    def close(self) -> None:
        """Nothing to release: offsets are written on ack."""
