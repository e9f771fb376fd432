"""The notifications service: the shop's order confirmation e-mail, taken out of the checkout request.

It consumes the shop's ``order`` events through ``outbox.consumer`` (verify the
shop's signature, decrypt with its own key, de-duplicate in its inbox), keeps
what it needs of each order in its own database, and sends the confirmation
once per order. Run it with ``python -m sample_monolith.services.notifications``.
"""

from .service import build_consumer, dispatch_mail, migrate, render_confirmation

__all__ = ["build_consumer", "dispatch_mail", "migrate", "render_confirmation"]
