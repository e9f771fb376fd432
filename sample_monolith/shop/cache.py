"""A small in-process cache for read-mostly pages (the product list, customer cards)."""

import threading


class SimpleCache:
    """Dictionary cache with ``get``/``set``/``delete``; one per process, no expiry."""

    def __init__(self):
        self._data = {}
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            return self._data.get(key, default)

    def set(self, key, value):
        with self._lock:
            self._data[key] = value

    def delete(self, key):
        with self._lock:
            return self._data.pop(key, None) is not None

    def clear(self):
        with self._lock:
            self._data.clear()


cache = SimpleCache()
