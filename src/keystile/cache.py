"""The verified-key cache: a known key costs no store call.

Entries are keyed by digest and live ``ttl`` seconds (``negative_ttl`` for
"no such key", kept short so a key made a moment ago is found soon). The
cache holds at most ``size`` entries; the oldest goes first. Revocation in
this process drops the entry at once; other processes drop it on an
invalidation message or at the TTL, which is what bounds how long a revoked
key can still pass elsewhere.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from keystile.stores.base import KeyRecord

__all__ = ["KeyCache"]

_MISSING = object()


class KeyCache:
    """A bounded TTL map from digest to ``KeyRecord`` (or ``None`` for unknown)."""

    def __init__(
        self,
        ttl: float,
        *,
        negative_ttl: float = 0.5,
        size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[KeyRecord | None, float]] = {}
        self._ids: dict[str, str] = {}  # key id -> digest, to forget by id

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"KeyCache(entries={len(self._entries)}, size={self.size}, ttl={self.ttl})"

    def get(self, digest: str) -> KeyRecord | object | None:
        """The cached answer, or ``MISSING`` (``KeyCache.MISSING``) when it must be looked up."""
        entry = self._entries.get(digest)
        if entry is None:
            return _MISSING
        if entry[1] <= self._clock():
            self.forget_digest(digest)
            return _MISSING
        return entry[0]

    MISSING = _MISSING

    def put(self, digest: str, record: KeyRecord | None) -> None:
        ttl = self.ttl if record is not None else self.negative_ttl
        if ttl <= 0 or self.size <= 0:
            return
        with self._lock:
            while len(self._entries) >= self.size:
                oldest = next(iter(self._entries))
                self._drop(oldest)
            self._entries[digest] = (record, self._clock() + ttl)
            if record is not None:
                self._ids[record.id] = digest

    def forget_digest(self, digest: str) -> None:
        with self._lock:
            self._drop(digest)

    def forget_id(self, key_id: str) -> None:
        with self._lock:
            digest = self._ids.get(key_id)
            if digest is not None:
                self._drop(digest)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._ids.clear()

    def _drop(self, digest: str) -> None:
        entry = self._entries.pop(digest, None)
        if entry is not None and entry[0] is not None:
            self._ids.pop(entry[0].id, None)
