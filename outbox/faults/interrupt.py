"""Turning SIGTERM (and SIGINT) into an exception, so a run's clean-up runs before it exits.

SIGTERM's default action ends the process at once: no ``finally`` block runs,
and a stage's private tables, broker destinations and child processes stay
behind. ``signals_interrupt()`` makes the signal raise ``Interrupted`` in the
main thread instead, so the stack unwinds through every ``finally``. A clean-up
itself runs ``shielded()``: a signal arriving inside it is held until it is
over, since an exception raised halfway through a clean-up would leave exactly
what the handler is there to remove. Once one signal has interrupted the run,
later ones are ignored: the clean-up under way is the way out (SIGKILL still
ends the process).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; a ``KeyboardInterrupt``, so ``except Exception`` lets it through."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        """The signal's name, e.g. SIGTERM."""
        return signal.Signals(self.signum).name


class _State:
    """What the handler needs to know: how deep in shielded blocks, and a signal held back or already raised."""

    shield_depth = 0
    held: int | None = None
    raised = False


_state = _State()


def _handle(signum: int, frame: Any) -> None:
    if _state.raised or _state.held is not None:
        return
    if _state.shield_depth:
        _state.held = signum
        return
    _state.raised = True
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """For the block, SIGTERM and SIGINT raise ``Interrupted`` in the main thread; the old handlers come back after.

    Off the main thread (where Python cannot install handlers) the block runs
    with the handlers as they are.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handle) for signum in SIGNALS}
    _state.shield_depth, _state.held, _state.raised = 0, None, False
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state.shield_depth, _state.held, _state.raised = 0, None, False


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Hold a signal that arrives during the block back until it ends, then raise ``Interrupted``.

    Nested blocks are fine: the signal is raised when the outermost one ends.
    Outside ``signals_interrupt()`` the block runs as it is.
    """
    _state.shield_depth += 1
    try:
        yield
    finally:
        _state.shield_depth -= 1
        if not _state.shield_depth and _state.held is not None:
            signum, _state.held = _state.held, None
            _state.raised = True
            raise Interrupted(signum)
