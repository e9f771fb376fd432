import datetime as dt

from .database import Column, Model, SurrogatePK, relationship
from .extensions import db

tags = db.Table(
    "post_tags",
    db.Column("post_id", db.Integer, db.ForeignKey("posts.id")),
    db.Column("tag_id", db.Integer, db.ForeignKey("tags.id")),
)


class User(SurrogatePK, Model):
    __tablename__ = "users"
    username = Column(db.String(80), unique=True, nullable=False)
    email = Column(db.String(80), unique=True, nullable=False)
    last_seen = Column(db.DateTime)
    active = Column(db.Boolean(), default=False)
    posts = relationship("Post", backref="author", lazy="dynamic")
    followed = relationship("User", secondary="followers", lazy="dynamic")

    def follow(self, user):
        if not self.is_following(user):
            self.followed.append(user)  # expect: collection
            return self

    def unfollow(self, user):
        if self.is_following(user):
            self.followed.remove(user)  # expect: collection
            return self

    def is_following(self, user):
        return self.followed.filter_by(id=user.id).count() > 0


class Post(SurrogatePK, Model):
    __tablename__ = "posts"
    title = Column(db.String(140))
    body = Column(db.Text)
    views = Column(db.Integer, default=0)
    user_id = Column(db.Integer, db.ForeignKey("users.id"))
    tags = relationship("Tag", secondary=tags, backref="posts")


class Tag(SurrogatePK, Model):
    __tablename__ = "tags"
    name = Column(db.String(50), unique=True)
