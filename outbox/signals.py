"""Stopping a long-running loop from SIGTERM/SIGINT without deadlocking the main thread.

A Python signal handler runs on the main thread, between two bytecodes, so it
may run while that thread is inside ``threading.Event.set``, ``clear`` or
``wait`` and holds the event's (non-reentrant) lock. A handler that calls
``Event.set`` itself would then wait for a lock its own thread holds, forever:
a relay or consumer asked to stop would hang until killed. The handler here
only starts a thread that does the stopping; that thread waits for the lock,
if it must, while the main thread carries on and releases it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def stop_on_signal(stop: Callable[[], None]) -> Callable[[int, Any], None]:
    """Return a signal handler that calls ``stop`` on a thread of its own."""

    def handle(signum: int, frame: Any) -> None:
        threading.Thread(target=stop, name="strangler-stop", daemon=True).start()

    return handle
