"""Flush-time capture of implicit updates: ``updated`` events for modified entities of chosen classes.

Code that changes an entity by assigning attributes (``order.status = "paid"``,
a ``setattr`` loop, a form or schema loaded into an instance) has no call a
codemod could put an ``emit`` after. With ``capture_updates(Order, prefix="shop")``
every ``Order`` modified in a transaction gets one ``shop.order.updated`` event,
written with the transaction's other events at commit, carrying the values the
transaction leaves. An entity the code already passed to ``emit`` in that
transaction gets no captured event (the explicit one says more), and neither
does one deleted or created in it (its own ``deleted``/``created`` event covers that).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import inspect
from sqlalchemy.orm import Session

from .emit import aggregate_type_of, emit, pending_entities

_MODIFIED = "strangler.capture.modified"
_CREATED = "strangler.capture.created"
_classes: dict[type, str] = {}
_installed = False


def capture_updates(*classes: type, prefix: str) -> None:
    """Emit ``<prefix>.<aggregate>.updated`` at commit for each modified instance of ``classes``.

    Subclasses are included, so passing the app's declarative base (or
    ``db.Model``) captures every mapped class. Calling it again adds classes.
    """
    global _installed
    for cls in classes:
        _classes[cls] = prefix
    if not _installed:
        sa_event.listen(Session, "before_flush", _before_flush)
        # Before emit's own before_commit listener, which writes the queued events.
        sa_event.listen(Session, "before_commit", _before_commit, insert=True)
        sa_event.listen(Session, "after_commit", _forget)
        sa_event.listen(Session, "after_rollback", _forget)
        _installed = True


def stop_capturing() -> None:
    """Capture nothing from now on (the listeners stay, idle)."""
    _classes.clear()


def _prefix_for(obj: Any) -> str | None:
    for cls, prefix in _classes.items():
        if isinstance(obj, cls):
            return prefix
    return None


def _remember_modified(session: Session) -> None:
    modified = session.info.setdefault(_MODIFIED, {})
    created = session.info.setdefault(_CREATED, set())
    created.update(id(obj) for obj in session.new if _prefix_for(obj) is not None)
    for obj in session.dirty:
        if _prefix_for(obj) is not None and session.is_modified(obj):
            modified[id(obj)] = obj  # a strong reference keeps id() unique until commit


def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    if _classes:
        _remember_modified(session)


def _before_commit(session: Session) -> None:
    if not _classes:
        return
    session.flush()  # commit would flush next; now deletions are final and before_flush saw every change
    modified = session.info.pop(_MODIFIED, None)
    created = session.info.pop(_CREATED, set())
    if not modified:
        return
    explicit = {id(entity) for entity in pending_entities(session)}
    for key, obj in modified.items():
        state = inspect(obj)
        if key in explicit or key in created or state.deleted or state.was_deleted or state.key is None:
            continue
        emit(session, f"{_prefix_for(obj)}.{aggregate_type_of(type(obj))}.updated", obj)


def _forget(session: Session) -> None:
    session.info.pop(_MODIFIED, None)
    session.info.pop(_CREATED, None)
