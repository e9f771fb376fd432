"""HTTP routes (JSON), one blueprint per area; admin routes live in ``shop.admin``."""
