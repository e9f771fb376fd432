from flask import Blueprint, jsonify, request

from ..forms import CheckoutForm, PaymentForm
from ..services import orders, payments

bp = Blueprint("orders", __name__, url_prefix="/orders")


@bp.post("")
def place():
    form = CheckoutForm(request.get_json(silent=True))
    if not form.validate():
        return jsonify(errors=form.errors), 400
    order = orders.place_order(form)
    return jsonify(order.to_dict()), 201


@bp.get("/<int:order_id>")
def show(order_id):
    return jsonify(orders.get_order(order_id).to_dict())


@bp.delete("/<int:order_id>/lines/<int:line_id>")
def remove_line(order_id, line_id):
    return jsonify(orders.remove_line(order_id, line_id).to_dict())


@bp.post("/<int:order_id>/cancel")
def cancel(order_id):
    return jsonify(orders.cancel_order(order_id).to_dict())


@bp.post("/<int:order_id>/payments")
def pay(order_id):
    form = PaymentForm(request.get_json(silent=True))
    if not form.validate():
        return jsonify(errors=form.errors), 400
    payment = payments.record_payment(order_id, form)
    body = payment.to_dict()
    body.update(order_status=payment.order.status)
    return jsonify(body), 201 if payment.status == "captured" else 402
