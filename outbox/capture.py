"""Flush-time capture of implicit updates: ``updated`` events for modified entities of chosen classes.

Code that changes an entity by assigning attributes (``order.status = "paid"``,
a ``setattr`` loop, a form or schema loaded into an instance) has no call a
codemod could put an ``emit`` after. With ``capture_updates(Order, prefix="shop")``
every ``Order`` modified in a transaction gets one ``shop.order.updated`` event,
written with the transaction's other events at commit, carrying the values the
transaction leaves. An entity the code already passed to ``emit`` in that
transaction gets no captured event (the explicit one says more), and neither
does one deleted or created in it (its own ``deleted``/``created`` event covers that).

Modified means that the flush writes the entity's aggregate: its own row (a
column, or a many-to-one reference, which is a foreign key column), or the rows
of a collection it owns (``delete-orphan``: an order's lines) or of a
many-to-many collection. Appending to a one-to-many collection it does not own
(``customer.orders.append(order)``) changes the *child's* row, its foreign key:
the child is the modified one, and the parent's row is untouched.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import inspect
from sqlalchemy.orm import Mapper, Session

from .emit import aggregate_type_of, emit, pending_entities

_MODIFIED = "strangler.capture.modified"
_CREATED = "strangler.capture.created"
_classes: dict[type, str] = {}
_collections: dict[Mapper, tuple[tuple[str, ...], tuple[str, ...]]] = {}
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


def _collections_of(mapper: Mapper) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(collections the class owns: delete-orphan or many-to-many; one-to-many collections of others' rows)."""
    found = _collections.get(mapper)
    if found is None:
        owned, others = [], []
        for rel in mapper.relationships:
            if not rel.uselist:
                continue
            if rel.direction.name == "MANYTOMANY" or rel.cascade.delete_orphan:
                owned.append(rel.key)
            elif rel.direction.name == "ONETOMANY":
                others.append(rel.key)
        found = _collections[mapper] = (tuple(owned), tuple(others))
    return found


def _remember_modified(session: Session) -> None:
    modified = session.info.setdefault(_MODIFIED, {})
    created = session.info.setdefault(_CREATED, set())
    created.update(id(obj) for obj in session.new if _prefix_for(obj) is not None)
    for obj in session.dirty:
        state = inspect(obj)
        owned, others = _collections_of(state.mapper)
        if _prefix_for(obj) is not None and (
            session.is_modified(obj, include_collections=False)
            or any(state.attrs[key].history.has_changes() for key in owned)
        ):
            modified[id(obj)] = obj  # a strong reference keeps id() unique until commit
        for key in others:
            # A child moved into or out of this collection gets its foreign key written.
            added, _, removed = state.attrs[key].history
            for child in (*(added or ()), *(removed or ())):
                if _prefix_for(child) is not None and inspect(child).persistent:
                    modified[id(child)] = child


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
