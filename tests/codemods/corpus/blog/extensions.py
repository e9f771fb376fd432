"""Extensions, created once and bound in create_app()."""
import redis
from flask_caching import Cache
from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()
cache = Cache()
login_manager = LoginManager()
rdb = redis.Redis()
