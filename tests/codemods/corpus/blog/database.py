"""Model helpers: the cookiecutter-flask CRUD mixin, surrogate keys, reference columns."""
from .extensions import db

Column = db.Column
relationship = db.relationship


class CRUDMixin(object):
    """Mixin that adds convenience methods for CRUD (create, read, update, delete) operations."""

    @classmethod
    def create(cls, **kwargs):
        instance = cls(**kwargs)
        return instance.save()  # expect: wrapper-call

    def update(self, commit=True, **kwargs):
        for attr, value in kwargs.items():
            setattr(self, attr, value)
        return commit and self.save() or self  # expect: wrapper-call

    def save(self, commit=True):
        db.session.add(self)  # expect: wrapper
        if commit:
            db.session.commit()
        return self

    def delete(self, commit=True):
        db.session.delete(self)  # expect: wrapper
        return commit and db.session.commit()


class Model(CRUDMixin, db.Model):
    __abstract__ = True


class SurrogatePK(object):
    __table_args__ = {"extend_existing": True}
    id = Column(db.Integer, primary_key=True)

    @classmethod
    def get_by_id(cls, record_id):
        if any((isinstance(record_id, (str, bytes)) and record_id.isdigit(), isinstance(record_id, (int, float)))):
            return cls.query.get(int(record_id))
        return None
