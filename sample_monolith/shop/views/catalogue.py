from flask import Blueprint, jsonify

from ..services import catalogue

bp = Blueprint("catalogue", __name__, url_prefix="/products")


@bp.get("")
def index():
    return jsonify(catalogue.active_products())
