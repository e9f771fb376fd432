import datetime as dt

from flask import Blueprint, flash, g, redirect, request, session, url_for

from .extensions import cache, db, rdb
from .forms import PostForm
from .models import Post, Tag, User

blueprint = Blueprint("blog", __name__)


@blueprint.before_app_request
def before_request():
    if g.user is not None:
        g.user.last_seen = dt.datetime.utcnow()  # expect: implicit-update
        db.session.commit()


@blueprint.route("/register", methods=["POST"])
def register():
    user = User.create(username=request.form["username"], email=request.form["email"])  # expect: wrapper-call
    session["user_id"] = user.id
    session.update({"fresh": True})
    flash("Thanks for registering")
    return redirect(url_for("blog.index"))


@blueprint.route("/post/<int:post_id>/edit", methods=["POST"])
def edit_post(post_id):
    post = Post.query.get_or_404(post_id)
    form = PostForm(obj=post)
    if form.validate_on_submit():
        form.populate_obj(post)  # expect: implicit-update
        db.session.commit()
        cache.delete("post/%d" % post_id)
    return redirect(url_for("blog.show", post_id=post_id))


@blueprint.route("/post/<int:post_id>")
def show(post_id):
    post = Post.query.get_or_404(post_id)
    post.views = post.views + 1  # expect: implicit-update
    db.session.commit()
    rdb.incr("views:%d" % post_id)
    return str(post.title)


@blueprint.route("/post", methods=["POST"])
def new_post():
    post = Post(title=request.form["title"], body=request.form["body"], author=g.user)
    for name in request.form.getlist("tags"):
        tag = Tag.query.filter_by(name=name).first()
        if tag is None:
            tag = Tag(name=name)
            db.session.add(tag)  # expect: session-add
        post.tags.append(tag)
    db.session.add(post)  # expect: session-add
    db.session.commit()
    seen = set()
    seen.add(post.id)
    cache.delete("index")
    return redirect(url_for("blog.show", post_id=post.id))


@blueprint.route("/post/<int:post_id>/tag/<name>", methods=["DELETE"])
def untag(post_id, name):
    post = Post.query.get_or_404(post_id)
    tag = Tag.query.filter_by(name=name).first_or_404()
    post.tags.remove(tag)  # expect: collection
    db.session.commit()
    return "", 204


@blueprint.route("/post/<int:post_id>", methods=["DELETE"])
def delete_post(post_id):
    post = Post.get_by_id(post_id)
    post.delete()  # expect: wrapper-call
    return "", 204


@blueprint.route("/admin/purge", methods=["POST"])
def purge_inactive():
    count = User.query.filter_by(active=False).delete()  # expect: query-bulk
    Post.query.filter(Post.views == 0).update({"views": 1}, synchronize_session=False)  # expect: query-bulk
    db.session.commit()
    flash("%d users purged" % count)
    return redirect(url_for("blog.index"))


@blueprint.route("/follow/<username>")
def follow(username):
    user = User.query.filter_by(username=username).first_or_404()
    g.user.follow(user)
    db.session.commit()
    return redirect(url_for("blog.user", username=username))


@blueprint.route("/profile", methods=["POST"])
def profile():
    user = User.get_by_id(session["user_id"])
    user.update(email=request.form["email"])  # expect: wrapper-call
    session.pop("fresh", None)
    return redirect(url_for("blog.index"))


@blueprint.route("/tags", methods=["POST"])
def import_tags():
    names = request.form.getlist("tags")
    known = {tag.name for tag in Tag.query.filter(Tag.name.in_(names))}
    [db.session.add(Tag(name=name)) for name in names if name not in known]  # expect: session-add
    db.session.add(  # expect: session-add
        Tag(name=request.form["featured"])
    )
    known.add(request.form["featured"])
    db.session.commit()
    return "", 201
