"""Before/after pairs for every kind, trap and refusal of ``strangler rewrite``."""

from __future__ import annotations

import pytest

from .helpers import MODELS, assert_codemod, run_on, write_tree


def run_on_source(tmp_path, source):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": source})
    return run_on(tmp_path, "app/code.py")


def sites(result, kind=None):
    return [s for s in result.sites if kind is None or s.kind == kind]


def test_session_add_of_a_new_entity_emits_created_before_the_commit(tmp_path):
    assert_codemod(tmp_path, '''
        from .models import db, User


        def sign_up(name):
            user = User(name=name)
            db.session.add(user)  # comment kept
            db.session.commit()
            return user
    ''', '''
        from .models import db, User
        from outbox import emit


        def sign_up(name):
            user = User(name=name)
            db.session.add(user)  # comment kept
            emit(db.session, "app.user.created", user)
            db.session.commit()
            return user
    ''')


def test_session_delete_and_loaded_add(tmp_path):
    assert_codemod(tmp_path, '''
        from .models import db, User


        def remove(uid):
            user = User.query.get(uid)
            db.session.delete(user)
            db.session.commit()


        def touch(uid):
            user = db.session.get(User, uid)
            db.session.add(user)
    ''', '''
        from .models import db, User
        from outbox import emit


        def remove(uid):
            user = User.query.get(uid)
            db.session.delete(user)
            emit(db.session, "app.user.deleted", user)
            db.session.commit()


        def touch(uid):
            user = db.session.get(User, uid)
            db.session.add(user)
            emit(db.session, "app.user.updated", user)
    ''')


def test_explicit_session_in_a_repository_class(tmp_path):
    assert_codemod(tmp_path, '''
        from sqlalchemy.orm import Session

        from .models import User


        class UserRepository:
            def __init__(self, session: Session):
                self.session = session

            def add(self, user: User):
                self.session.add(user)
    ''', '''
        from sqlalchemy.orm import Session

        from .models import User
        from outbox import emit


        class UserRepository:
            def __init__(self, session: Session):
                self.session = session

            def add(self, user: User):
                self.session.add(user)
                emit(self.session, "app.user.saved", user)
    ''')


def test_wrapper_that_commits_gets_the_emit_inside_before_its_commit_and_calls_stay(tmp_path):
    files = {"app/models.py": MODELS, "app/views.py": '''
        from .models import User


        def sign_up():
            user = User()
            user.save()
    '''}
    write_tree(tmp_path, files)
    result = run_on(tmp_path, "app/models.py", write=True)
    assert "emit(db.session, f\"app.{aggregate_type_of(type(self))}.saved\", self)\n        if commit:" in (
        tmp_path / "app/models.py"
    ).read_text()
    assert "from outbox.emit import aggregate_type_of" in (tmp_path / "app/models.py").read_text()
    assert [s.kind for s in result.sites] == ["wrapper"]
    views = run_on(tmp_path, "app/views.py", write=True)
    assert [(s.kind, s.action) for s in views.sites] == [("wrapper-call", "covered")]
    assert not views.changed


def test_bulk_query_update_and_delete(tmp_path):
    assert_codemod(tmp_path, '''
        from .models import db, Order


        def close(status):
            Order.query.filter_by(status="open").update({"status": status})
            Order.query.filter(Order.status == "void").delete()
            db.session.commit()
    ''', '''
        from .models import db, Order
        from outbox import emit


        def close(status):
            Order.query.filter_by(status="open").update({"status": status})
            emit(db.session, "app.order.updated", aggregate="order", data={"status": status})
            Order.query.filter(Order.status == "void").delete()
            emit(db.session, "app.order.deleted", aggregate="order")
            db.session.commit()
    ''')


def test_execute_of_a_statement_built_elsewhere_in_the_function_and_of_text(tmp_path):
    assert_codemod(tmp_path, '''
        from sqlalchemy import text, update

        from .models import db, Order


        def cancel(order_id, reason):
            stmt = update(Order).where(Order.id == order_id).values(status=reason)
            db.session.execute(stmt)
            db.session.execute(text("DELETE FROM orders WHERE status = 'void'"))
            db.session.execute(text("SELECT 1"))
            db.session.commit()
    ''', '''
        from sqlalchemy import text, update

        from .models import db, Order
        from outbox import emit


        def cancel(order_id, reason):
            stmt = update(Order).where(Order.id == order_id).values(status=reason)
            db.session.execute(stmt)
            emit(db.session, "app.order.updated", aggregate="order", key=order_id, data={"status": reason})
            db.session.execute(text("DELETE FROM orders WHERE status = 'void'"))
            emit(db.session, "app.order.deleted", aggregate="order")
            db.session.execute(text("SELECT 1"))
            db.session.commit()
    ''')


def test_bulk_mappings(tmp_path):
    assert_codemod(tmp_path, '''
        from .models import db, User


        def load(rows):
            db.session.bulk_insert_mappings(User, rows)
            db.session.commit()
    ''', '''
        from .models import db, User
        from outbox import emit


        def load(rows):
            db.session.bulk_insert_mappings(User, rows)
            emit(db.session, "app.user.created", aggregate="user", data={"rows": rows})
            db.session.commit()
    ''')


def test_a_collection_change_is_the_change_of_whoever_owns_the_rows(tmp_path):
    # User.orders does not own its orders: moving one in writes the order's foreign key (a new one is
    # inserted), so the order is what changed. A basket owns its items (delete-orphan): they are part of it.
    baskets = '''
        from .models import db


        class Basket(db.Model):
            id = db.Column(db.Integer, primary_key=True)
            items = db.relationship("Item", cascade="all, delete-orphan")


        class Item(db.Model):
            id = db.Column(db.Integer, primary_key=True)
            basket_id = db.Column(db.ForeignKey("basket.id"))
    '''
    result = assert_codemod(tmp_path, '''
        from .baskets import Basket, Item
        from .models import db, User, Order


        def attach(uid, oid):
            user = db.session.get(User, uid)
            order = db.session.get(Order, oid)
            user.orders.append(order)
            fresh = Order(status="new")
            user.orders.append(fresh)
            user.orders.append(Order(status="new"))
            user.orders.clear()
            db.session.commit()


        def fill(basket_id):
            basket = db.session.get(Basket, basket_id)
            basket.items.append(Item())
            db.session.commit()


        def fresh():
            user = User()
            user.orders.append(Order())
            db.session.add(user)
    ''', '''
        from .baskets import Basket, Item
        from .models import db, User, Order
        from outbox import emit


        def attach(uid, oid):
            user = db.session.get(User, uid)
            order = db.session.get(Order, oid)
            user.orders.append(order)
            emit(db.session, "app.order.updated", order)
            fresh = Order(status="new")
            user.orders.append(fresh)
            emit(db.session, "app.order.created", fresh)
            user.orders.append(Order(status="new"))
            user.orders.clear()
            db.session.commit()


        def fill(basket_id):
            basket = db.session.get(Basket, basket_id)
            basket.items.append(Item())
            emit(db.session, "app.basket.updated", basket)
            db.session.commit()


        def fresh():
            user = User()
            user.orders.append(Order())
            db.session.add(user)
            emit(db.session, "app.user.created", user)
    ''', extra={"app/baskets.py": baskets})
    assert [(s.kind, s.action) for s in result.sites] == [
        ("collection", "rewrite"), ("collection", "rewrite"), ("collection", "decide"), ("collection", "decide"),
        ("collection", "rewrite"), ("session-add", "rewrite")]
    assert "does not own" in result.sites[2].reason


def test_dbapi_cursor_with_a_visible_commit(tmp_path):
    assert_codemod(tmp_path, '''
        import sqlite3


        def purge(day):
            conn = sqlite3.connect("shop.db")
            cur = conn.cursor()
            cur.execute("DELETE FROM orders WHERE day = ?", (day,))
            cur.execute("SELECT count(*) FROM orders")
            conn.commit()
    ''', '''
        import sqlite3
        from outbox import emit


        def purge(day):
            conn = sqlite3.connect("shop.db")
            cur = conn.cursor()
            cur.execute("DELETE FROM orders WHERE day = ?", (day,))
            emit(conn, "app.order.deleted", aggregate="order", data={"day": day})
            cur.execute("SELECT count(*) FROM orders")
            conn.commit()
    ''')


def test_sql_where_on_the_primary_key_becomes_the_events_key(tmp_path):
    assert_codemod(tmp_path, '''
        from sqlalchemy import text

        from .models import db


        def rename(user_id, name):
            db.session.execute(text("UPDATE users SET name = :name WHERE id = :uid"), {"name": name, "uid": user_id})
            db.session.commit()


        def drop(conn, user_id):
            conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
            conn.commit()
    ''', '''
        from sqlalchemy import text

        from .models import db
        from outbox import emit


        def rename(user_id, name):
            db.session.execute(text("UPDATE users SET name = :name WHERE id = :uid"), {"name": name, "uid": user_id})
            emit(db.session, "app.user.updated", aggregate="user", key=user_id, data={"name": name, "uid": user_id})
            db.session.commit()


        def drop(conn, user_id):
            conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
            emit(conn, "app.user.deleted", aggregate="user", key=user_id, data={"user_id": user_id})
            conn.commit()
    ''')


@pytest.mark.parametrize("source, reason", [
    ('''
        import sqlite3


        def purge():
            conn = sqlite3.connect("shop.db", isolation_level=None)
            conn.execute("DELETE FROM orders")
            conn.commit()
    ''', "autocommit"),
    ('''
        import psycopg2


        def purge():
            conn = psycopg2.connect("dbname=shop")
            conn.autocommit = True
            cur = conn.cursor()
            cur.execute("DELETE FROM orders")
    ''', "autocommit"),
    ('''
        def purge(cur):
            cur.execute("DELETE FROM orders")
    ''', "no commit"),
    ('''
        from .models import db, User


        def make(name, factory):
            db.session.add(factory(name=name))
    ''', "the entity is not a name"),
    ('''
        from .models import db, User


        class Users:
            @classmethod
            def make(cls, name):
                db.session.add(cls(name=name))
    ''', "the entity is not a name"),
    ('''
        from .models import db, User


        def make(name):
            db.session.add(User(name=name)); db.session.commit()
    ''', "built on a line that also commits"),
    ('''
        from .models import db, User


        def make(names):
            db.session.add_all([User(name=n) for n in names])
    ''', "bind the list to a name"),
    ('''
        from .models import db, User


        def make(user_id, name):
            db.session.merge(User(id=user_id, name=name))
    ''', "assign it"),
    ('''
        from .models import db, User


        def make(names):
            [db.session.add(User(name=n)) for n in names]
    ''', "inside a comprehension"),
    ('''
        from .models import db, User


        def drop(users):
            any(db.session.delete(u) for u in users)
    ''', "inside a comprehension"),
])
def test_refusals_are_reported_as_needing_a_decision(tmp_path, source, reason):
    result = assert_codemod(tmp_path, source, source)
    decided = [s for s in result.sites if s.action == "decide"]
    assert len(decided) == 1 and reason in decided[0].reason


def test_an_object_built_in_the_add_is_tracked_and_emitted_by_what_the_add_attached(tmp_path):
    # No name holds the object: the line must stay as it is, so a line before it starts tracking its
    # class and the emit after it takes the object the add attached (its cascaded children are not it).
    result = assert_codemod(tmp_path, '''
        from . import models
        from .models import db, Order, User


        def restock(user_id, rows, name):
            if name:
                # a comment stays above
                db.session.add(User(name=name, orders=[Order(status="new")]))  # and one after
            for row in rows:
                db.session.add(models.Order(status=row))
            db.session.commit()
    ''', '''
        from . import models
        from .models import db, Order, User
        from outbox import added, emit, track_added


        def restock(user_id, rows, name):
            if name:
                # a comment stays above
                track_added(db.session, User)
                db.session.add(User(name=name, orders=[Order(status="new")]))  # and one after
                emit(db.session, "app.user.created", added(db.session, User))
            for row in rows:
                track_added(db.session, models.Order)
                db.session.add(models.Order(status=row))
                emit(db.session, "app.order.created", added(db.session, models.Order))
            db.session.commit()
    ''')
    assert [(s.action, s.event_type) for s in result.sites] == [("rewrite", "app.user.created"),
                                                                 ("rewrite", "app.order.created")]


def test_a_write_in_the_first_iterable_of_a_comprehension_runs_once_and_is_rewritten(tmp_path):
    assert_codemod(tmp_path, '''
        from sqlalchemy import insert

        from .models import db, User


        def import_users(names):
            ids = [row.id for row in db.session.execute(insert(User).returning(User.id), {"name": names[0]})]
            db.session.commit()
            return ids
    ''', '''
        from sqlalchemy import insert

        from .models import db, User
        from outbox import emit


        def import_users(names):
            ids = [row.id for row in db.session.execute(insert(User).returning(User.id), {"name": names[0]})]
            emit(db.session, "app.user.created", aggregate="user")
            db.session.commit()
            return ids
    ''')


def test_a_factory_in_the_add_is_not_taken_for_a_constructor(tmp_path):
    # Tag.create() may hand back an object that is in the session already: only a class is tracked.
    source = '''
        from .models import db


        class Tag(db.Model):
            id = db.Column(db.Integer, primary_key=True)

            @classmethod
            def create(cls, **kwargs):
                return cls(**kwargs)


        def make(name):
            db.session.add(Tag.create(name=name))
            db.session.add(Tag(name=name))
    '''
    result = run_on_source(tmp_path, source)
    assert [(s.action, s.code) for s in result.sites] == [
        ("decide", "db.session.add(Tag.create(name=name))"), ("rewrite", "db.session.add(Tag(name=name))")]
    assert "not a name" in result.sites[0].reason


def test_names_taken_in_the_module_are_not_shadowed_by_the_tracking_helpers(tmp_path):
    assert_codemod(tmp_path, '''
        from .models import db, User

        added = []


        def make(name):
            db.session.add(User(name=name))
            added.append(name)
    ''', '''
        from .models import db, User
        from outbox import added as outbox_added, emit, track_added

        added = []


        def make(name):
            track_added(db.session, User)
            db.session.add(User(name=name))
            emit(db.session, "app.user.created", outbox_added(db.session, User))
            added.append(name)
    ''')


def test_wrapper_defined_outside_the_tree_is_a_decision(tmp_path):
    source = '''
        from sqlalchemy_mixins import ActiveRecordMixin

        from .models import db


        class Post(db.Model, ActiveRecordMixin):
            id = db.Column(db.Integer, primary_key=True)


        def publish(post_id):
            post = Post.query.get(post_id)
            post.save()
    '''
    result = assert_codemod(tmp_path, source, source)
    assert [(s.kind, s.action) for s in result.sites] == [("wrapper-call", "decide")]


def test_lookalikes_are_not_state_changes(tmp_path):
    source = '''
        import redis
        import requests

        cache = redis.Redis()


        class Client:
            def __init__(self):
                self.session = requests.Session()

            def drop(self, url):
                self.session.delete(url)


        def work(form, key):
            seen = set()
            seen.add(key)
            cache.delete(key)
            form.data.update({"a": 1})
            items = []
            items.append(key)
            d = {}
            d.update(a=1)
    '''
    result = assert_codemod(tmp_path, source, source)
    assert result.sites == []


def test_ignore_comment_on_a_line_and_on_a_function(tmp_path):
    source = '''
        from .models import db, User


        def a(user: User):
            db.session.delete(user)  # strangler: ignore


        def b(user: User):  # strangler: ignore
            db.session.delete(user)
    '''
    result = assert_codemod(tmp_path, source, source)
    assert [s.action for s in result.sites] == ["ignored", "ignored"]


def test_commit_on_the_same_line_puts_the_emit_before_the_line(tmp_path):
    assert_codemod(tmp_path, '''
        from .models import db, User


        def rename(user: User):
            db.session.add(user); db.session.commit()
    ''', '''
        from .models import db, User
        from outbox import emit


        def rename(user: User):
            emit(db.session, "app.user.saved", user)
            db.session.add(user); db.session.commit()
    ''')


def test_an_existing_emit_name_is_not_shadowed(tmp_path):
    assert_codemod(tmp_path, '''
        from flask_socketio import emit

        from .models import db, User


        def sign_up(name):
            user = User(name=name)
            db.session.add(user)
            emit("signed_up", name)
    ''', '''
        from flask_socketio import emit

        from .models import db, User
        from outbox import emit as outbox_emit


        def sign_up(name):
            user = User(name=name)
            db.session.add(user)
            outbox_emit(db.session, "app.user.created", user)
            emit("signed_up", name)
    ''')


def test_implicit_update_is_reported_for_capture_not_rewritten(tmp_path):
    source = '''
        from .models import db, User


        def rename(uid, name):
            user = User.query.get(uid)
            user.name = name
            db.session.commit()


        def draft(name):
            user = User()
            user.name = name
    '''
    result = assert_codemod(tmp_path, source, source)
    assert [(s.kind, s.action, s.aggregate) for s in result.sites] == [("implicit-update", "capture", "user")]


def test_domain_verbs_and_per_site_event_types(tmp_path):
    assert_codemod(tmp_path, '''
        from .models import db, Order


        def cancel_order(order: Order):
            db.session.delete(order)


        def archive(order: Order):
            db.session.delete(order)
    ''', '''
        from .models import db, Order
        from outbox import emit


        def cancel_order(order: Order):
            db.session.delete(order)
            emit(db.session, "app.order.cancelled", order)


        def archive(order: Order):
            db.session.delete(order)
            emit(db.session, "shop.order.archived", order)
    ''', verbs="function", event_types=("*::archive=shop.{aggregate}.archived",))


def test_skip_options(tmp_path):
    source = '''
        from .models import db, User


        def before_request():
            user = User()
            db.session.add(user)
    '''
    result = assert_codemod(tmp_path, source, source, skip_functions=("before_*",))
    assert result.sites == []
    result = assert_codemod(tmp_path, source, source, skip=("app/code.py:session-add",))
    assert result.sites == []


@pytest.mark.parametrize("source, line", [
    ("print 'python 2'\n", 1),
    ("x = = 1\n", 1),
    ("def broken(:\n    pass\n", 1),  # libcst stops on line 2; the mistake, as Python names it, is on line 1
    ("x = 1\nif x\n    y = 2\n", 2),
])
def test_unparsable_files_are_skipped_with_path_and_line(tmp_path, source, line):
    write_tree(tmp_path, {"app/bad.py": source})
    result = run_on(tmp_path, "app/bad.py", write=True)
    assert result.status == "skipped" and result.line == line and result.path == "app/bad.py"
    assert (tmp_path / "app/bad.py").read_text() == source


def test_bad_encoding_is_skipped(tmp_path):
    write_tree(tmp_path, {"app/x.py": ""})
    (tmp_path / "app/x.py").write_bytes(b"a = 1\nb = '\xff\xfe'\n")
    result = run_on(tmp_path, "app/x.py", write=True)
    assert result.status == "skipped" and result.line == 2


def test_merge_emits_only_when_the_upsert_changed_something_and_add_all_loops(tmp_path):
    result = assert_codemod(tmp_path, '''
        from .models import db, User


        def upsert(rows):
            for row in rows:
                user = db.session.merge(User(id=row["id"], name=row["name"]))
            users = [User(name=n) for n in rows]
            db.session.add_all(users)
            db.session.add_all([User(name=n) for n in rows])
            db.session.commit()
    ''', '''
        from .models import db, User
        from outbox import emit


        def upsert(rows):
            for row in rows:
                user = db.session.merge(User(id=row["id"], name=row["name"]))
                if db.session.is_modified(user):
                    emit(db.session, "app.user.saved", user)
            users = [User(name=n) for n in rows]
            db.session.add_all(users)
            for _entity in users:
                emit(db.session, "app.user.created", _entity)
            db.session.add_all([User(name=n) for n in rows])
            db.session.commit()
    ''')
    assert [s.action for s in result.sites] == ["rewrite", "rewrite", "decide"]


def test_an_explicit_write_of_the_entity_covers_its_attribute_assignments(tmp_path):
    result = assert_codemod(tmp_path, '''
        from .models import db, User


        def rename(uid, name):
            user = User.query.get(uid)
            user.name = name
            db.session.add(user)
            db.session.commit()
    ''', '''
        from .models import db, User
        from outbox import emit


        def rename(uid, name):
            user = User.query.get(uid)
            user.name = name
            db.session.add(user)
            emit(db.session, "app.user.updated", user)
            db.session.commit()
    ''')
    assert [s.kind for s in result.sites] == ["session-add"]


def test_one_line_blocks_are_found_and_left_to_a_decision(tmp_path):
    source = '''
        from .models import db, User


        def drop(user: User, really): db.session.delete(user)


        def maybe(user: User, really):
            if really: db.session.delete(user)
    '''
    result = assert_codemod(tmp_path, source, source)
    assert [(s.kind, s.action) for s in result.sites] == [("session-delete", "decide")] * 2


def test_an_add_and_a_delete_of_a_loop_variable_are_rewritten_once(tmp_path):
    assert_codemod(tmp_path, '''
        from .models import db


        def sync(customers, gone):
            for c in customers:
                db.session.add(c)
            for g in gone:
                db.session.delete(g)
    ''', '''
        from .models import db
        from outbox import emit
        from outbox.emit import aggregate_type_of


        def sync(customers, gone):
            for c in customers:
                db.session.add(c)
                emit(db.session, f"app.{aggregate_type_of(type(c))}.saved", c)
            for g in gone:
                db.session.delete(g)
                emit(db.session, f"app.{aggregate_type_of(type(g))}.deleted", g)
    ''')


@pytest.mark.parametrize("source", [
    '''
        from .models import db, User


        def upsert(data):
            u = User(**data); db.session.merge(u)
            db.session.commit()
    ''',
    '''
        from .models import db, User


        def upsert(data):
            u = User(**data)
            return db.session.merge(u)
    ''',
    '''
        from .models import db, User
        from outbox import emit


        def upsert(data):
            u = User(**data)
            db.session.merge(u)
            if db.session.is_modified(u):
                emit(db.session, "app.user.saved", u)
    ''',
])
def test_a_merge_whose_result_is_dropped_needs_a_decision_not_an_emit_of_its_argument(tmp_path, source):
    result = assert_codemod(tmp_path, source, source)
    [site] = sites(result, "session-merge")
    assert (site.action, site.covered) == ("decide", False)
    assert "`u = db.session.merge(u)`" in site.reason


def test_a_merge_assigned_to_a_name_emits_the_merged_copy(tmp_path):
    assert_codemod(tmp_path, '''
        from .models import db, User


        def upsert(data):
            u = User(**data)
            merged = db.session.merge(u)
            kept: User = db.session.merge(User(**data))
            db.session.commit()
            return merged
    ''', '''
        from .models import db, User
        from outbox import emit


        def upsert(data):
            u = User(**data)
            merged = db.session.merge(u)
            if db.session.is_modified(merged):
                emit(db.session, "app.user.saved", merged)
            kept: User = db.session.merge(User(**data))
            if db.session.is_modified(kept):
                emit(db.session, "app.user.saved", kept)
            db.session.commit()
            return merged
    ''')
