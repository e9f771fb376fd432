"""A stop requested from a signal handler never waits for a lock the interrupted thread holds."""

from __future__ import annotations

import signal
import threading

from outbox.signals import stop_on_signal


def test_a_signal_landing_inside_the_events_own_lock_still_stops_without_hanging():
    stop = threading.Event()
    handler = stop_on_signal(stop.set)
    returned = threading.Event()

    def interrupted_inside_event_clear():
        # What the main thread looks like when SIGTERM lands while it runs Event.clear() or wait():
        # it holds the event's lock, and the handler runs on that same thread.
        with stop._cond:
            handler(signal.SIGTERM, None)
            returned.set()

    thread = threading.Thread(target=interrupted_inside_event_clear, daemon=True)
    thread.start()
    # A handler calling stop.set() itself would wait for the lock its own thread holds: forever.
    assert returned.wait(5), "the signal handler hung on the event's lock"
    assert stop.wait(5)  # the stop still happens, once the lock is released


def test_the_relay_commands_handler_also_stops_from_a_thread_of_its_own():
    from toolkit.commands.relay import StopSignals

    stopped = threading.Event()

    class Relay:
        def stop(self):
            stopped.set()

    signals = StopSignals()
    signals.attach(Relay())
    returned = threading.Event()

    def interrupted_inside_event_clear():
        with stopped._cond:
            signals._handle(signal.SIGTERM, None)
            returned.set()

    threading.Thread(target=interrupted_inside_event_clear, daemon=True).start()
    assert returned.wait(5), "the relay command's signal handler hung on the event's lock"
    assert signals.requested and stopped.wait(5)
