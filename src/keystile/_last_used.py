"""``last_used_at``, written behind: never one store write per request.

A request only notes the time in a dict (the newest time per key wins);
a timer writes the whole dict in one batched statement at most every
``FLUSH_INTERVAL`` seconds, and ``close()`` writes what is left (the engine
calls it from ``ks.close()``, the ASGI lifespan shutdown and ``atexit``).
A write that fails keeps its values for the next one, so an outage delays
``last_used_at`` but does not lose it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from keystile.errors import ServiceUnavailable

__all__ = ["FLUSH_INTERVAL", "LastUsed"]

logger = logging.getLogger("keystile")

FLUSH_INTERVAL = 30.0


class LastUsed:
    """Pending ``last_used_at`` values, and the timer that writes them with ``write``."""

    def __init__(
        self, write: Callable[[dict[str, datetime]], None], interval: float = FLUSH_INTERVAL
    ) -> None:
        self._write = write
        self._interval = interval
        self._pending: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"LastUsed(pending={len(self._pending)})"

    def note(self, key_id: str, when: datetime) -> None:
        with self._lock:
            self._pending[key_id] = when
            if self._timer is None and not self._closed:
                self._timer = threading.Timer(self._interval, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Write the pending values now (one batched statement)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._timer = None
        if not pending:
            return
        try:
            self._write(pending)
        except ServiceUnavailable:
            logger.warning("could not write last_used_at for %d keys; will retry", len(pending))
            with self._lock:
                for key_id, when in pending.items():
                    self._pending.setdefault(key_id, when)

    def close(self) -> None:
        """Stop the timer and write what is pending; later notes wait for an explicit flush."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
        self.flush()
