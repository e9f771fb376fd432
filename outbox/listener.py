"""The relay's LISTEN connection to PostgreSQL, read by the relay's own thread.

One connection in autocommit, listening on the outbox table's channel. The
relay waits on its socket together with its wake-up flag
(``outbox.wakeup.Wakeup``) and reads what arrived without blocking: the
thread that receives a commit's notification publishes its rows itself. While
the relay is busy (a backlog, a claim), notifications wait in the socket and
in the server's queue, and the next read takes them all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.engine import URL

log = logging.getLogger("strangler.relay")

#: Seconds a (re)connection may take before the relay polls instead.
CONNECT_TIMEOUT = 5
#: libpq's CONNECTION_OK.
_CONNECTION_OK = 0


class Listener:
    """``LISTEN "<channel>"`` on its own connection; ``read`` hands each payload to ``on_payload``."""

    def __init__(self, url: URL, channel: str, on_payload: Callable[[str], None]):
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._channel = channel
        self._on_payload = on_payload
        self._conn = None
        self._pgconn = None

    @property
    def listening(self) -> bool:
        return self._conn is not None

    def connect(self) -> None:
        """Open the connection and LISTEN; raises when the database cannot be reached."""
        import psycopg  # psycopg 3, whatever the engine's driver: the relay builds a Listener only if it imports

        self.close()
        conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        try:
            conn.execute(f'LISTEN "{self._channel}"')
        except Exception:
            conn.close()
            raise
        self._conn, self._pgconn = conn, conn.pgconn

    def fileno(self) -> int:
        """The socket to wait on (valid while ``listening``)."""
        return self._pgconn.socket

    def read(self) -> bool:
        """Take every notification received so far, without blocking; False if the connection broke.

        A broken connection is closed, so ``listening`` turns False.
        """
        pgconn = self._pgconn
        if pgconn is None:
            return False
        try:
            pgconn.consume_input()  # raises when the server closed the connection
            if pgconn.status != _CONNECTION_OK:  # a FATAL message read, the close not yet seen
                raise ConnectionError(pgconn.error_message.decode(errors="replace").strip() or "connection closed")
            while (notification := pgconn.notifies()) is not None:
                self._on_payload(notification.extra.decode())
        except Exception as exc:
            log.warning("LISTEN failed, polling meanwhile: %s", exc, extra={"relay": {"event": "listen"}})
            self.close()
            return False
        return True

    def close(self) -> None:
        conn, self._conn, self._pgconn = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken
                pass
