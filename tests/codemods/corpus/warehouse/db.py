from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine
from sqlalchemy.orm import declarative_base, scoped_session, sessionmaker

engine = create_engine("sqlite:///warehouse.db")
db_session = scoped_session(sessionmaker(bind=engine))
Base = declarative_base()
metadata = MetaData()

shipments = Table(
    "shipments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("status", String(20)),
)


def save(obj):
    db_session.add(obj)  # expect: wrapper
    db_session.commit()


def remove(obj):
    db_session.delete(obj)  # expect: wrapper
    db_session.commit()
