"""The shop's tables: customers, catalogue and stock, orders, payments, loyalty."""

from datetime import datetime, timezone

from .database import Model, db


def utcnow():
    """Naive UTC timestamp, the way the database has always stored them."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Customer(Model):
    __tablename__ = "customers"

    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(255), nullable=False, unique=True)
    name = db.Column(db.String(120), nullable=False)
    marketing_opt_in = db.Column(db.Boolean, nullable=False, default=False)
    loyalty_points = db.Column(db.Integer, nullable=False, default=0, server_default="0")
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)

    orders = db.relationship("Order", back_populates="customer", lazy="dynamic")

    def to_dict(self):
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "marketing_opt_in": self.marketing_opt_in,
            "loyalty_points": self.loyalty_points,
        }


class Product(Model):
    __tablename__ = "products"

    id = db.Column(db.Integer, primary_key=True)
    sku = db.Column(db.String(32), nullable=False, unique=True)
    name = db.Column(db.String(200), nullable=False)
    price_cents = db.Column(db.Integer, nullable=False)
    active = db.Column(db.Boolean, nullable=False, default=True)

    stock = db.relationship("StockLevel", uselist=False, back_populates="product")

    def to_dict(self):
        return {
            "id": self.id,
            "sku": self.sku,
            "name": self.name,
            "price_cents": self.price_cents,
            "active": self.active,
            "available": self.stock.available if self.stock else 0,
        }


class StockLevel(Model):
    __tablename__ = "inventory"

    product_id = db.Column(db.Integer, db.ForeignKey("products.id"), primary_key=True)
    on_hand = db.Column(db.Integer, nullable=False, default=0)
    reserved = db.Column(db.Integer, nullable=False, default=0)

    product = db.relationship("Product", back_populates="stock")

    @property
    def available(self):
        return self.on_hand - self.reserved


class Order(Model):
    __tablename__ = "orders"

    id = db.Column(db.Integer, primary_key=True)
    # Nullable: orders outlive the customer account (see services.customers.delete_customer).
    customer_id = db.Column(db.Integer, db.ForeignKey("customers.id"), nullable=True)
    email = db.Column(db.String(255), nullable=False)
    ship_to_name = db.Column(db.String(120), nullable=False)
    status = db.Column(db.String(20), nullable=False, default="placed", index=True)
    total_cents = db.Column(db.Integer, nullable=False, default=0)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)
    paid_at = db.Column(db.DateTime, nullable=True)
    cancelled_at = db.Column(db.DateTime, nullable=True)

    customer = db.relationship("Customer", back_populates="orders")
    lines = db.relationship(
        "OrderLine", back_populates="order", cascade="all, delete-orphan", order_by="OrderLine.id"
    )
    payments = db.relationship("Payment", back_populates="order", order_by="Payment.id")

    def recalculate_total(self):
        self.total_cents = sum(line.quantity * line.unit_price_cents for line in self.lines)
        return self.total_cents

    def to_dict(self):
        return {
            "id": self.id,
            "customer_id": self.customer_id,
            "email": self.email,
            "status": self.status,
            "total_cents": self.total_cents,
            "lines": [line.to_dict() for line in self.lines],
            "payments": [payment.to_dict() for payment in self.payments],
        }


class OrderLine(Model):
    __tablename__ = "order_lines"

    id = db.Column(db.Integer, primary_key=True)
    order_id = db.Column(db.Integer, db.ForeignKey("orders.id"), nullable=False)
    product_id = db.Column(db.Integer, db.ForeignKey("products.id"), nullable=False)
    quantity = db.Column(db.Integer, nullable=False)
    unit_price_cents = db.Column(db.Integer, nullable=False)

    order = db.relationship("Order", back_populates="lines")
    product = db.relationship("Product")

    def to_dict(self):
        return {
            "id": self.id,
            "product_id": self.product_id,
            "sku": self.product.sku if self.product else None,
            "quantity": self.quantity,
            "unit_price_cents": self.unit_price_cents,
        }


class Payment(Model):
    __tablename__ = "payments"

    id = db.Column(db.Integer, primary_key=True)
    order_id = db.Column(db.Integer, db.ForeignKey("orders.id"), nullable=False)
    amount_cents = db.Column(db.Integer, nullable=False)
    method = db.Column(db.String(20), nullable=False)
    status = db.Column(db.String(20), nullable=False)
    reference = db.Column(db.String(64), nullable=True)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)

    order = db.relationship("Order", back_populates="payments")

    def to_dict(self):
        return {
            "id": self.id,
            "amount_cents": self.amount_cents,
            "method": self.method,
            "status": self.status,
            "reference": self.reference,
        }


class LoyaltyEntry(Model):
    __tablename__ = "loyalty_entries"

    id = db.Column(db.Integer, primary_key=True)
    customer_id = db.Column(db.Integer, db.ForeignKey("customers.id"), nullable=False)
    order_id = db.Column(db.Integer, db.ForeignKey("orders.id"), nullable=True)
    points = db.Column(db.Integer, nullable=False)
    reason = db.Column(db.String(40), nullable=False)
    created_at = db.Column(db.DateTime, nullable=False, default=utcnow)


# Filled by the nightly report job (admin/legacy_reports.py) with plain SQL; never mapped.
daily_sales = db.Table(
    "daily_sales",
    db.Column("day", db.String(10), primary_key=True),
    db.Column("product_id", db.Integer, db.ForeignKey("products.id"), primary_key=True),
    db.Column("units", db.Integer, nullable=False),
    db.Column("revenue_cents", db.Integer, nullable=False),
)
