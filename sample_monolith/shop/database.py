"""Database object and the model helpers every model in the shop shares."""

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData

# Named constraints, so Alembic can drop and recreate them (SQLite batch mode needs names).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))


class CRUDMixin:
    """Create/read/update/delete shortcuts. ``save()`` and ``delete()`` commit by default."""

    @classmethod
    def get_by_id(cls, record_id):
        if isinstance(record_id, str) and record_id.isdigit():
            record_id = int(record_id)
        return db.session.get(cls, record_id)

    @classmethod
    def create(cls, **kwargs):
        instance = cls(**kwargs)
        return instance.save()

    def update(self, commit=True, **kwargs):
        for attr, value in kwargs.items():
            setattr(self, attr, value)
        if commit:
            return self.save()
        return self

    def save(self, commit=True):
        db.session.add(self)
        if commit:
            db.session.commit()
        return self

    def delete(self, commit=True):
        db.session.delete(self)
        if commit:
            db.session.commit()


class Model(CRUDMixin, db.Model):
    """Base model class that includes CRUD convenience methods."""

    __abstract__ = True


def persist(obj):
    """Add ``obj`` to the session and flush, so its primary key is known; the caller commits."""
    db.session.add(obj)
    db.session.flush()
    return obj
