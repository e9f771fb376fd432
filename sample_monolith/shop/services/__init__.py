"""Business operations. Views call these; they own the commits."""


class ShopError(Exception):
    """A request the shop refuses; ``status`` is the HTTP status the view answers with."""

    status = 400

    def __init__(self, message, status=None):
        super().__init__(message)
        if status is not None:
            self.status = status


class NotFound(ShopError):
    status = 404


class OutOfStock(ShopError):
    status = 409
