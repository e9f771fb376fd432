"""The shop: a Flask + SQLAlchemy monolith (customers, catalogue, stock, orders, payments, loyalty).

Configuration, from the environment unless ``create_app(config_overrides)`` says otherwise:

* ``SHOP_DATABASE_URL``: SQLAlchemy URL; default a SQLite file ``shop.db`` in the instance folder.
* ``SHOP_MAIL_SPOOL``: the mail spool file; default ``mail.spool.jsonl`` in the instance folder.
* ``SHOP_INLINE_EMAIL``: ``0`` stops the order confirmation e-mail from being sent by the
  checkout request itself (config ``INLINE_EMAIL``); default on.
* ``SHOP_INSTANCE_PATH``: the instance folder.
"""

import os

from flask import Flask, jsonify

from .database import db

FALSE_WORDS = {"0", "false", "no", "off", ""}


def _flag(value, default=True):
    if value is None:
        return default
    return str(value).strip().lower() not in FALSE_WORDS


def create_app(config_overrides=None, instance_path=None):
    """Build the shop; ``config_overrides`` win over the environment."""
    instance_path = instance_path or os.environ.get("SHOP_INSTANCE_PATH")
    app = Flask(__name__, instance_path=os.path.abspath(instance_path) if instance_path else None)

    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ.get("SHOP_DATABASE_URL")
        or "sqlite:///" + os.path.join(app.instance_path, "shop.db"),
        MAIL_SPOOL=os.environ.get("SHOP_MAIL_SPOOL")
        or os.path.join(app.instance_path, "mail.spool.jsonl"),
        INLINE_EMAIL=_flag(os.environ.get("SHOP_INLINE_EMAIL")),
        JSON_SORT_KEYS=False,
    )
    app.config.update(config_overrides or {})
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        os.makedirs(app.instance_path, exist_ok=True)

    db.init_app(app)
    _register_blueprints(app)
    _register_errorhandlers(app)
    _register_commands(app)
    return app


def _register_blueprints(app):
    from .admin.views import bp as admin_bp
    from .views.catalogue import bp as catalogue_bp
    from .views.customers import bp as customers_bp
    from .views.orders import bp as orders_bp

    for blueprint in (customers_bp, catalogue_bp, orders_bp, admin_bp):
        app.register_blueprint(blueprint)


def _register_errorhandlers(app):
    from .services import ShopError

    @app.errorhandler(ShopError)
    def shop_error(error):
        return jsonify(error=str(error)), error.status


def _register_commands(app):
    @app.cli.command("init-db")
    def init_db():
        """Create the tables without Alembic (development only)."""
        from . import models  # noqa: F401  (registers the tables)

        db.create_all()
        print("created", ", ".join(sorted(db.metadata.tables)))
