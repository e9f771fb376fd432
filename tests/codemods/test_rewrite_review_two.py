"""Second review: writes that run conditionally or later, typed lookalikes, async merge, context managers, bulk saves."""

from __future__ import annotations

import pytest

from .helpers import MODELS, assert_codemod, run_on, write_tree


def decisions(result):
    return [s for s in result.sites if s.action == "decide"]


@pytest.mark.parametrize("line, reason", [
    ("db.session.add(a) if flag else db.session.add(b)", "runs only if"),
    ("flag and db.session.add(a)", "runs only if"),
    ("print('gone') or db.session.delete(b)", "runs only if"),
    ("cb = lambda: db.session.delete(b)", "lambda"),
    ("list(map(db.session.delete, users))", "passed as a function"),
])
def test_a_write_that_runs_conditionally_or_later_needs_a_decision_not_an_emit(tmp_path, line, reason):
    source = f'''
        from .models import db, User


        def pick(flag, users):
            a = User()
            b = User.query.get(1)
            {line}
            db.session.commit()
    '''
    result = assert_codemod(tmp_path, source, source)
    found = decisions(result)
    assert found and len(found) == len(result.sites), result.sites
    assert all(reason in s.reason for s in found), [s.reason for s in found]


def test_the_parts_of_a_conditional_expression_that_always_run_are_rewritten(tmp_path):
    assert_codemod(tmp_path, '''
        from sqlalchemy import delete

        from .models import db, Order, User


        def purge(flag):
            n = "some" if db.session.execute(delete(Order)).rowcount else "none"
            user = User.query.get(1)
            db.session.delete(user) or print("gone")
            db.session.commit()
            return n
    ''', '''
        from sqlalchemy import delete

        from .models import db, Order, User
        from outbox import emit


        def purge(flag):
            n = "some" if db.session.execute(delete(Order)).rowcount else "none"
            emit(db.session, "app.order.deleted", aggregate="order")
            user = User.query.get(1)
            db.session.delete(user) or print("gone")
            emit(db.session, "app.user.deleted", user)
            db.session.commit()
            return n
    ''')


@pytest.mark.parametrize("annotation, module", [
    ("requests.Session", "import requests"),
    ("aiohttp.ClientSession", "import aiohttp"),
    ("ClientSession", "from aiohttp import ClientSession"),
    ("Optional[requests.Session]", "import requests\nfrom typing import Optional"),
])
def test_a_parameter_named_like_a_session_but_annotated_with_another_type_is_not_a_session(
        tmp_path, annotation, module):
    source = f'''
{module}


def fetch(url, session: {annotation}):
    session.delete(url)
    session.add(url)
'''
    result = assert_codemod(tmp_path, source, source)
    assert result.sites == []


def test_an_attribute_annotated_with_another_type_is_not_a_session(tmp_path):
    source = '''
        import requests


        class Client:
            def __init__(self, session: requests.Session):
                self.session = session

            def forget(self, url):
                self.session.delete(url)
    '''
    result = assert_codemod(tmp_path, source, source)
    assert result.sites == []


@pytest.mark.parametrize("annotation, module", [
    ("Session", "from sqlalchemy.orm import Session"),
    ("scoped_session", "from sqlalchemy.orm import scoped_session"),
    ("sqlalchemy.orm.Session", "import sqlalchemy.orm"),
    ('"Session"', "from sqlalchemy.orm import Session"),
    ("Optional[Session]", "from typing import Optional\nfrom sqlalchemy.orm import Session"),
    ("Session | None", "from sqlalchemy.orm import Session"),
    ("Union[Session, None]", "from typing import Union\nfrom sqlalchemy.orm import Session"),
    ("Annotated[Session, Depends(get_db)]",
     "from typing import Annotated\nfrom fastapi import Depends\nfrom sqlalchemy.orm import Session\nget_db = None"),
])
def test_a_session_annotation_in_any_spelling_is_a_session_with_high_confidence(tmp_path, annotation, module):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": f'''
{module}
from .models import User


def remove(user: User, session: {annotation}):
    session.delete(user)
'''})
    result = run_on(tmp_path, "app/code.py")
    assert [(s.kind, s.action, s.confidence) for s in result.sites] == [("session-delete", "rewrite", "high")]


def test_an_unannotated_parameter_named_like_a_session_is_still_a_session_with_medium_confidence(tmp_path):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": '''
from .models import User


def remove(user: User, session):
    session.delete(user)
'''})
    result = run_on(tmp_path, "app/code.py")
    assert [(s.kind, s.confidence) for s in result.sites] == [("session-delete", "medium")]


def test_an_awaited_async_merge_assigned_to_a_name_emits_the_merged_copy_with_the_sync_session(tmp_path):
    assert_codemod(tmp_path, '''
        from sqlalchemy.ext.asyncio import async_sessionmaker

        from .models import User

        ASession = async_sessionmaker()


        async def upsert(u: User):
            async with ASession() as s:
                m = await s.merge(u)
                await s.commit()
    ''', '''
        from sqlalchemy.ext.asyncio import async_sessionmaker

        from .models import User
        from outbox import emit

        ASession = async_sessionmaker()


        async def upsert(u: User):
            async with ASession() as s:
                m = await s.merge(u)
                if s.sync_session.is_modified(m):
                    emit(s.sync_session, "app.user.saved", m)
                await s.commit()
    ''')


def test_an_async_merge_whose_result_is_dropped_advises_an_awaited_merge(tmp_path):
    source = '''
        from sqlalchemy.ext.asyncio import async_sessionmaker

        from .models import User

        ASession = async_sessionmaker()


        async def upsert(u: User):
            async with ASession() as s:
                await s.merge(u)
                await s.commit()
    '''
    result = assert_codemod(tmp_path, source, source)
    [site] = decisions(result)
    assert "`u = await s.merge(u)`" in site.reason and "sync_session" not in site.reason


def test_the_session_a_contextmanager_yields_is_the_with_target(tmp_path):
    assert_codemod(tmp_path, '''
        import contextlib
        from contextlib import contextmanager

        from sqlalchemy.orm import sessionmaker

        from .models import User

        SessionLocal = sessionmaker()


        @contextmanager
        def session_scope():
            s = SessionLocal()
            try:
                yield s
                s.commit()
            except Exception:
                s.rollback()
                raise
            finally:
                s.close()


        @contextlib.contextmanager
        def plain_scope():
            with SessionLocal() as s:
                yield s


        def sign_up(name):
            with session_scope() as s:
                user = User(name=name)
                s.add(user)


        def sign_up_later(name):
            with plain_scope() as t:
                user = User(name=name)
                t.add(user)
                t.commit()
    ''', '''
        import contextlib
        from contextlib import contextmanager

        from sqlalchemy.orm import sessionmaker

        from .models import User
        from outbox import emit

        SessionLocal = sessionmaker()


        @contextmanager
        def session_scope():
            s = SessionLocal()
            try:
                yield s
                s.commit()
            except Exception:
                s.rollback()
                raise
            finally:
                s.close()


        @contextlib.contextmanager
        def plain_scope():
            with SessionLocal() as s:
                yield s


        def sign_up(name):
            with session_scope() as s:
                user = User(name=name)
                s.add(user)
                emit(s, "app.user.created", user)


        def sign_up_later(name):
            with plain_scope() as t:
                user = User(name=name)
                t.add(user)
                emit(t, "app.user.created", user)
                t.commit()
    ''')


def test_a_contextmanager_that_commits_makes_the_commit_visible_and_a_plain_generator_is_no_with_target(tmp_path):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": '''
from contextlib import contextmanager

from fastapi import Depends
from sqlalchemy.orm import Session, sessionmaker

from .models import User

SessionLocal = sessionmaker()


@contextmanager
def session_scope():
    s = SessionLocal()
    yield s
    s.commit()


def get_db():
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


def sign_up(name):
    with session_scope() as s:
        s.add(User(name=name))


def view(name, db: Session = Depends(get_db)):
    user = User(name=name)
    db.add(user)
    db.commit()
'''})
    result = run_on(tmp_path, "app/code.py")
    assert [(s.function, s.kind, s.commit_visible) for s in result.sites] == [
        ("sign_up", "session-add", True), ("view", "session-add", True)]


def test_bulk_save_objects_of_a_list_of_new_objects_emits_one_created_event_for_the_call(tmp_path):
    assert_codemod(tmp_path, '''
        from .models import db, User


        def load(names):
            users = [User(name=n) for n in names]
            db.session.bulk_save_objects(users)
            db.session.commit()


        def touch(ids):
            users = User.query.filter(User.id.in_(ids)).all()
            db.session.bulk_save_objects(users)
            db.session.commit()
    ''', '''
        from .models import db, User
        from outbox import emit


        def load(names):
            users = [User(name=n) for n in names]
            db.session.bulk_save_objects(users)
            emit(db.session, "app.user.created", aggregate="user", data={"count": len(users)})
            db.session.commit()


        def touch(ids):
            users = User.query.filter(User.id.in_(ids)).all()
            db.session.bulk_save_objects(users)
            emit(db.session, "app.user.updated", aggregate="user", data={"count": len(users)})
            db.session.commit()
    ''')


def test_a_query_that_filters_by_the_primary_key_gives_the_event_its_key(tmp_path):
    assert_codemod(tmp_path, '''
        from .models import db, User


        def remove(uid, name):
            User.query.filter_by(id=uid).delete()
            db.session.query(User).filter(User.id == uid).update({"name": name})
            User.query.filter_by(name=name).delete()
            db.session.commit()
    ''', '''
        from .models import db, User
        from outbox import emit


        def remove(uid, name):
            User.query.filter_by(id=uid).delete()
            emit(db.session, "app.user.deleted", aggregate="user", key=uid)
            db.session.query(User).filter(User.id == uid).update({"name": name})
            emit(db.session, "app.user.updated", aggregate="user", key=uid, data={"name": name})
            User.query.filter_by(name=name).delete()
            emit(db.session, "app.user.deleted", aggregate="user")
            db.session.commit()
    ''')


def test_an_async_contextmanager_and_a_contextmanager_method_yield_their_sessions(tmp_path):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": '''
from contextlib import asynccontextmanager, contextmanager

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import sessionmaker

from .models import User

ASession = async_sessionmaker()
SessionLocal = sessionmaker()


@asynccontextmanager
async def scope():
    async with ASession() as s:
        yield s
        await s.commit()


class Repo:
    @contextmanager
    def scope(self):
        s = SessionLocal()
        yield s

    def make(self):
        with self.scope() as s:
            s.add(User())


async def make():
    async with scope() as s:
        user = User()
        s.add(user)
'''})
    result = run_on(tmp_path, "app/code.py")
    assert [(s.function, s.action, s.commit_visible) for s in result.sites] == [
        ("Repo.make", "rewrite", False), ("make", "rewrite", True)]
    assert 'emit(s.sync_session, "app.user.created", user)' in result.diff
