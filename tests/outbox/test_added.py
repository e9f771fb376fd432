"""``track_added``/``added``: the object an ``add`` attached, for an entity built in the call with no name."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import ForeignKey, Integer, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, scoped_session, sessionmaker

from outbox import EmitError, added, emit, outbox_table, track_added
from outbox import migrate as outbox_migrate


class Base(DeclarativeBase):
    pass


class Category(Base):
    """Self-referential: an add cascades to children of the same class."""

    __tablename__ = "added_categories"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(40))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("added_categories.id"), nullable=True)
    children: Mapped[list["Category"]] = relationship(back_populates="parent")
    parent: Mapped["Category | None"] = relationship(back_populates="children", remote_side=[id])


class Note(Base):
    __tablename__ = "added_notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    text: Mapped[str] = mapped_column(String(80))


class Ticket(Base):
    """A legacy constructor with side effects: it writes an audit note, and may add itself."""

    __tablename__ = "added_tickets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(80))

    def __init__(self, session: Session, title: str, add_self: bool = False):
        session.add(Note(text=f"ticket {title} opened"))
        self.title = title
        if add_self:
            session.add(self)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request):
    url = request.getfixturevalue(f"{request.param}_url")
    outbox_migrate.upgrade(outbox_migrate.standalone_config(url))
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def events(engine):
    with engine.connect() as conn:
        rows = conn.execute(select(outbox_table).order_by(outbox_table.c.position)).all()
    return [(row.type, row.aggregateid, json.loads(row.payload)) for row in rows]


def test_the_object_built_in_the_add_is_emitted_with_its_generated_key(engine):
    with Session(engine) as session:
        track_added(session, Note)
        session.add(Note(text="hello"))
        emit(session, "app.note.created", added(session, Note))
        session.commit()
        note_id = session.scalars(select(Note.id)).one()
    assert events(engine) == [("app.note.created", str(note_id), {"id": note_id, "text": "hello"})]


def test_children_of_the_same_class_that_the_add_cascades_to_are_not_the_object(engine):
    with Session(engine) as session:
        track_added(session, Category)
        session.add(Category(name="root", children=[Category(name="leaf"), Category(name="twig")]))
        root = added(session, Category)
        assert root.name == "root"
        emit(session, "app.category.created", root)
        session.commit()
    [(type_, _, data)] = events(engine)
    assert (type_, data["name"], data["parent_id"]) == ("app.category.created", "root", None)


def test_objects_attached_before_the_tracking_and_objects_loaded_after_it_do_not_count(engine):
    with Session(engine) as session:
        session.add(Category(name="old"))
        session.commit()
    with Session(engine) as session:
        session.add(Category(name="pending, untracked"))
        track_added(session, Category)
        loaded = session.scalars(select(Category).where(Category.name == "old")).one()  # autoflush, then a load
        session.add(Category(name="new", parent=loaded))
        assert added(session, Category).name == "new"


def test_a_constructor_that_adds_other_objects_or_itself_still_gives_the_object(engine):
    with Session(engine) as session:
        track_added(session, Ticket)
        session.add(Ticket(session, "printer on fire"))
        assert added(session, Ticket).title == "printer on fire"  # not the audit Note it added first

        track_added(session, Ticket)
        session.add(Ticket(session, "coffee machine", add_self=True))  # attached inside, add() is a no-op
        assert added(session, Ticket).title == "coffee machine"


def test_each_add_in_a_loop_gets_its_own_object(engine):
    with Session(engine) as session:
        for text in ("a", "b", "c"):
            track_added(session, Note)
            session.add(Note(text=text))
            emit(session, "app.note.created", added(session, Note))
        session.commit()
    assert [data["text"] for _, _, data in events(engine)] == ["a", "b", "c"]


def test_an_add_that_attaches_nothing_is_an_error_not_some_other_object(engine):
    with Session(engine) as session:
        note = Note(text="already here")
        session.add(note)
        track_added(session, Note)
        session.add(note)  # in the session already: nothing is attached
        with pytest.raises(EmitError, match="attached no Note"):
            added(session, Note)
        with pytest.raises(EmitError, match="track_added"):
            added(session, Note)  # the tracking was used up


def test_a_rollback_forgets_what_was_tracked(engine):
    with Session(engine) as session:
        track_added(session, Note)
        session.add(Note(text="x"))
        session.rollback()
        with pytest.raises(EmitError, match="track_added"):
            added(session, Note)


def test_scoped_sessions_and_other_targets(engine):
    scoped = scoped_session(sessionmaker(engine))
    try:
        track_added(scoped, Note)
        scoped.add(Note(text="scoped"))
        emit(scoped, "app.note.created", added(scoped, Note))
        scoped.commit()
    finally:
        scoped.remove()
    assert [data["text"] for _, _, data in events(engine)] == ["scoped"]
    with engine.connect() as conn, pytest.raises(EmitError, match="Session"):
        track_added(conn, Note)
