"""Outgoing e-mail. There is no SMTP here: each message is appended to a spool file
as one JSON line (to, subject, body, order_id), which the mail daemon picks up."""

import json
import os
import threading

from flask import current_app

_spool_lock = threading.Lock()


def format_amount(cents):
    return f"${cents // 100}.{cents % 100:02d}"


def order_confirmation(order_id, email, name, total_cents):
    """Build the order confirmation message from plain values."""
    return {
        "to": email,
        "subject": f"Your order #{order_id} is confirmed",
        "body": (
            f"Hello {name},\n\n"
            f"Thank you for your order #{order_id}. "
            f"Total: {format_amount(total_cents)}.\n\n"
            "The Shop team\n"
        ),
        "order_id": order_id,
    }


def spool_path(app=None):
    app = app or current_app
    return app.config["MAIL_SPOOL"]


def deliver(message, path=None):
    """Append ``message`` to the spool file."""
    path = path or spool_path()
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    line = json.dumps(message, sort_keys=True)
    with _spool_lock, open(path, "a", encoding="utf-8") as spool:
        spool.write(line + "\n")


def send_order_confirmation(order):
    deliver(order_confirmation(order.id, order.email, order.ship_to_name, order.total_cents))


def read_spool(path):
    """Every message in the spool file, oldest first; [] when there is none."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as spool:
        return [json.loads(line) for line in spool if line.strip()]
