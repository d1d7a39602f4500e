"""``last_used_at`` and usage counts, written behind: never one store write per request.

A request only notes the time in a dict (the newest time per key wins) and
adds 1 to a counter of (key, day, route, status); a timer writes both in
batched statements at most every ``FLUSH_INTERVAL`` seconds, and
``close()`` writes what is left (the engine calls it from ``ks.close()``,
the ASGI lifespan shutdown and ``atexit``). A write that fails keeps its
values for the next one, so an outage delays them but does not lose them:
counts add up again, bounded by ``MAX_COUNTS`` distinct counters (past
that, new counters are dropped and the loss is logged, never silent).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from keystile.errors import ServiceUnavailable

__all__ = ["FLUSH_INTERVAL", "MAX_COUNTS", "Count", "LastUsed"]

logger = logging.getLogger("keystile")

FLUSH_INTERVAL = 30.0
MAX_COUNTS = 100_000  # distinct counters kept while the store cannot be written

# (key id, UTC day as days since 1970-01-01, route pattern, status)
Count = tuple[str, int, str, int]


class LastUsed:
    """Pending ``last_used_at`` values, and the timer that writes them with ``write``."""

    def __init__(
        self,
        write: Callable[[dict[str, datetime]], None],
        interval: float = FLUSH_INTERVAL,
        *,
        write_counts: Callable[[dict[Count, int]], None] | None = None,
        max_counts: int = MAX_COUNTS,
    ) -> None:
        self._write = write
        self._write_counts = write_counts
        self._interval = interval
        self._max_counts = max_counts
        self._pending: dict[str, datetime] = {}
        self._counts: dict[Count, int] = {}
        self._dropped = 0
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"LastUsed(pending={len(self._pending)}, counts={len(self._counts)})"

    def note(self, key_id: str, when: datetime) -> None:
        """Remember ``when`` for ``key_id``, unless a later use is already noted.

        Threads note in whatever order the scheduler runs them; the newest
        use wins, whichever thread noted it last.
        """
        with self._lock:
            pending = self._pending
            noted = pending.get(key_id)
            if noted is None or noted < when:
                pending[key_id] = when
            if self._timer is None and not self._closed:
                self._start_timer()

    def count(self, counter: Count) -> None:
        """Add one request to ``counter``: a dict increment, no I/O."""
        with self._lock:
            counts = self._counts
            counted = counts.get(counter)
            if counted is not None:
                counts[counter] = counted + 1
            elif len(counts) < self._max_counts:
                counts[counter] = 1
            else:
                self._dropped += 1
            if self._timer is None and not self._closed:
                self._start_timer()

    def _start_timer(self) -> None:
        self._timer = threading.Timer(self._interval, self.flush)
        self._timer.daemon = True
        self._timer.start()

    def flush(self) -> None:
        """Write the pending values now (a few batched statements)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            counts, self._counts = self._counts, {}
            dropped, self._dropped = self._dropped, 0
            self._timer = None
        if dropped:
            logger.error(
                "dropped %d usage counts: over %d counters waited for a store that failed",
                dropped,
                self._max_counts,
            )
        if pending:
            try:
                self._write(pending)
            except ServiceUnavailable:
                logger.warning("could not write last_used_at for %d keys; will retry", len(pending))
                with self._lock:
                    for key_id, when in pending.items():
                        self._pending.setdefault(key_id, when)
        if counts and self._write_counts is not None:
            try:
                self._write_counts(counts)
            except ServiceUnavailable:
                logger.warning("could not write %d usage counts; will retry", len(counts))
                self._keep(counts)

    def _keep(self, counts: dict[Count, int]) -> None:
        """Add counts that could not be written back to the pending ones, within the bound."""
        with self._lock:
            pending = self._counts
            for counter, n in counts.items():
                if counter in pending:
                    pending[counter] += n
                elif len(pending) < self._max_counts:
                    pending[counter] = n
                else:
                    self._dropped += n
            if self._timer is None and not self._closed:
                self._start_timer()

    def close(self) -> None:
        """Stop the timer and write what is pending; later notes wait for an explicit flush."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
        self.flush()
