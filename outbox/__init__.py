"""strangler's runtime: the transactional outbox, its relay, routers, crypto and consumers.

Importable with SQLAlchemy alone; broker clients and crypto libraries are
imported by the feature that needs them.
"""

from .emit import EmitError, added, emit, track_added
from .envelope import Envelope
from .settings import configure
from .table import attach_to, get_outbox_table, metadata, outbox_table

__all__ = [
    "EmitError",
    "Envelope",
    "added",
    "attach_to",
    "configure",
    "emit",
    "get_outbox_table",
    "metadata",
    "outbox_table",
    "track_added",
]
