"""The relay's wake-up flag: threading.Event's calls, and a wait that also watches a socket."""

from __future__ import annotations

import os
import resource
import socket
import threading
import time

import pytest

from outbox.testing.services import in_ci
from outbox.wakeup import READABLE, Wakeup


def test_wait_times_out_with_false_while_the_flag_is_down():
    wakeup = Wakeup()
    started = time.monotonic()
    assert wakeup.wait(0.05) is False
    assert time.monotonic() - started >= 0.04


def test_a_raised_flag_stays_raised_until_cleared():
    wakeup = Wakeup()
    wakeup.set()
    assert wakeup.wait(0) is True and wakeup.wait(0) is True and wakeup.is_set()
    wakeup.clear()
    assert wakeup.wait(0) is False and not wakeup.is_set()


def test_set_from_another_thread_ends_a_wait_at_once():
    wakeup = Wakeup()
    threading.Timer(0.05, wakeup.set).start()
    started = time.monotonic()
    assert wakeup.wait(10) is True
    assert time.monotonic() - started < 5


def test_a_readable_socket_ends_a_wait_without_raising_the_flag():
    wakeup = Wakeup()
    left, right = socket.socketpair()
    with left, right:
        assert wakeup.wait(0.01, also=left) is False
        right.send(b"x")
        assert wakeup.wait(10, also=left) == READABLE
        assert not wakeup.is_set()
        wakeup.set()
        assert wakeup.wait(10, also=left) is True  # the flag first


def test_a_set_whose_byte_outlives_a_clear_still_counts():
    """set() raising the flag just before a clear() lowers it, its byte sent just after: not lost."""
    wakeup = Wakeup()
    wakeup.clear()
    wakeup._writer.send(b"\0")  # the byte of a set() that raced with the clear()
    assert wakeup.wait(10) is True and wakeup.is_set()


def test_descriptors_past_1024_are_waited_on_too():
    """select() refuses them; a relay run inside a busy process may well hold that many files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        reason = f"the hard open-files limit ({hard}) is below the 1,200 this test opens"
        pytest.fail(reason) if in_ci() else pytest.skip(reason)  # as for a missing service
    if soft != resource.RLIM_INFINITY and soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        wakeup = Wakeup()
        assert wakeup._reader.fileno() > 1024
        assert wakeup.wait(0.01) is False
        wakeup.set()
        assert wakeup.wait(1) is True
        wakeup.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
