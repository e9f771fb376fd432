"""Sign-up, profile changes and account deletion."""

from sqlalchemy import update

from ..cache import cache
from ..database import db
from ..models import Customer, LoyaltyEntry, Order
from . import NotFound, ShopError


def get_customer(customer_id):
    customer = Customer.get_by_id(customer_id)
    if customer is None:
        raise NotFound(f"no customer {customer_id}")
    return customer


def find_by_email(email):
    return Customer.query.filter_by(email=email.strip().lower()).first()


def sign_up(form):
    existing = find_by_email(form.data["email"])
    if existing is not None:
        raise ShopError(f"{existing.email} already has an account (id {existing.id})", status=409)
    customer = Customer(
        email=form.data["email"],
        name=form.data["name"],
        marketing_opt_in=form.data["marketing_opt_in"],
    )
    customer.save()
    return customer


def update_profile(customer_id, form):
    customer = get_customer(customer_id)
    if form.data.get("name"):
        customer.name = form.data["name"].strip()
    if form.data.get("marketing_opt_in") is not None:
        customer.marketing_opt_in = bool(form.data["marketing_opt_in"])
    db.session.commit()
    cache.delete(f"customer:{customer.id}")
    return customer


def delete_customer(customer_id):
    """Forget a customer. Their orders stay (the accountants need them) but lose the link."""
    customer = get_customer(customer_id)
    LoyaltyEntry.query.filter_by(customer_id=customer.id).delete()
    db.session.execute(
        update(Order).where(Order.customer_id == customer.id).values(customer_id=None)
    )
    customer.delete()
    cache.delete(f"customer:{customer_id}")
