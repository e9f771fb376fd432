"""A flag other threads raise and one thread waits on, together with a socket of its own.

The relay's thread waits for two things at once: a notification on its LISTEN
connection, and a word from another thread (``stop()`` on SIGTERM, ``wake()``).
``threading.Event`` can only wait for the second, so the notifications used to
be read by a thread of their own and handed over: the waiting thread woke, and
then waited again for the interpreter lock the reader still held, two thread
switches between a commit and its publish. Here the flag also writes a byte to
a socket pair, so one ``poll`` waits for both and the thread that reads the
notification is the one that publishes it.
"""

from __future__ import annotations

import select
import socket

#: What ``wait`` returns when ``also`` is readable.
READABLE = "readable"


class Wakeup:
    """``set``/``clear``/``is_set``/``wait``, as ``threading.Event``; ``wait`` may also watch a socket."""

    def __init__(self):
        self._flag = False
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def set(self) -> None:
        """Raise the flag (any thread, never blocks)."""
        self._flag = True
        try:
            self._writer.send(b"\0")  # every time: a clear() racing with this set() must not lose it
        except OSError:  # the pair's buffer is full: the reader is readable already
            pass

    def clear(self) -> None:
        """Lower the flag (the waiting thread only).

        Down already, nothing is read: a byte left by a set() racing with an
        earlier clear() only ends the next wait early, which raises the flag.
        """
        if self._flag:
            self._drain()
            self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float, also=None) -> bool | str:
        """Wait up to ``timeout`` seconds for the flag, or for ``also`` (a socket or fd) to be readable.

        Returns True when the flag is up (it stays up until ``clear``),
        ``READABLE`` when only ``also`` is readable, False on timeout.
        """
        if self._flag:
            return True
        ready = _readable([self._reader.fileno()] if also is None else [self._reader.fileno(), _fileno(also)], timeout)
        if self._reader.fileno() in ready:
            # A byte without the flag: a set() whose byte outlived a clear(); it counts as raised.
            self._flag = True
            return True
        return READABLE if ready else False

    def close(self) -> None:
        for end in (getattr(self, "_reader", None), getattr(self, "_writer", None)):
            if end is not None:
                end.close()

    __del__ = close  # the pair lives as long as its owner, which has no close of its own

    def _drain(self) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except OSError:  # nothing left (BlockingIOError)
            pass


def _fileno(source) -> int:
    return source if isinstance(source, int) else source.fileno()


def _readable(fds: list[int], timeout: float) -> list[int]:
    """The fds of ``fds`` readable within ``timeout`` seconds.

    ``poll`` where there is one: ``select`` refuses descriptors past 1,024, which
    a relay run inside a busy process may well hold.
    """
    if hasattr(select, "poll"):
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        return [fd for fd, _ in poller.poll(max(timeout, 0.0) * 1000)]
    return select.select(fds, [], [], max(timeout, 0.0))[0]
