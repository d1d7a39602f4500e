"""The verified-key cache: a known key costs no store call.

Entries are keyed by digest and live ``ttl`` seconds (``negative_ttl`` for
"no such key", kept short so a key made a moment ago is found soon). Known
keys and unknown ones are kept apart, each with its own bound (``size`` and
``negative_size``; the oldest goes first): anyone can send random keys that
pass the checksum, and if they shared one bound with real keys, a flood of
them would push every real key out and send each back to the store. A flood
now only turns over the unknown entries. Revocation in this process drops
the entry at once; other processes drop it on an invalidation message or at
the TTL, which is what bounds how long a revoked key can still pass elsewhere.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import ClassVar

from keystile.stores.base import KeyRecord

__all__ = ["KeyCache"]

_MISSING = object()


class KeyCache:
    """A bounded TTL map from digest to ``KeyRecord`` (or ``None`` for unknown).

    ``size`` bounds the known keys, ``negative_size`` the unknown ones; a
    zero turns that half off (``size=0`` turns off both).
    """

    def __init__(
        self,
        ttl: float,
        *,
        negative_ttl: float = 0.5,
        size: int = 10_000,
        negative_size: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.size = size
        self.negative_size = negative_size
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[KeyRecord, float]] = {}  # known keys
        self._unknown: dict[str, float] = {}  # digest -> expiry, kept apart (see above)
        self._ids: dict[str, str] = {}  # key id -> digest, to forget by id

    def __len__(self) -> int:
        return len(self._entries) + len(self._unknown)

    def __repr__(self) -> str:
        return (
            f"KeyCache(entries={len(self._entries)}, unknown={len(self._unknown)}, "
            f"size={self.size}, negative_size={self.negative_size}, ttl={self.ttl})"
        )

    def get(self, digest: str) -> KeyRecord | object | None:
        """The cached answer, or ``MISSING`` (``KeyCache.MISSING``) when it must be looked up."""
        # A known key (every request's path) costs what it did with one map.
        entry = self._entries.get(digest)
        if entry is not None:
            if entry[1] <= self._clock():
                self.forget_digest(digest)
                return _MISSING
            return entry[0]
        expires = self._unknown.get(digest)
        if expires is None:
            return _MISSING
        if expires <= self._clock():
            self.forget_digest(digest)
            return _MISSING
        return None

    MISSING: ClassVar[object] = _MISSING

    def put(self, digest: str, record: KeyRecord | None) -> None:
        if self.size <= 0:
            return
        if record is None:
            self._put_unknown(digest)
            return
        if self.ttl <= 0:
            return
        with self._lock:
            self._drop(digest)  # an older answer for it, known or not
            while len(self._entries) >= self.size:
                self._drop(next(iter(self._entries)))
            self._entries[digest] = (record, self._clock() + self.ttl)
            self._ids[record.id] = digest

    def _put_unknown(self, digest: str) -> None:
        if self.negative_ttl <= 0 or self.negative_size <= 0:
            return
        with self._lock:
            self._drop(digest)
            unknown = self._unknown
            while len(unknown) >= self.negative_size:
                del unknown[next(iter(unknown))]
            unknown[digest] = self._clock() + self.negative_ttl

    def forget_digest(self, digest: str) -> None:
        with self._lock:
            self._drop(digest)

    def forget_id(self, key_id: str) -> None:
        with self._lock:
            digest = self._ids.get(key_id)
            if digest is not None:
                self._drop(digest)

    def forget_org(self, org: str) -> None:
        """Drop every cached key of ``org`` (its org limit changed)."""
        with self._lock:
            for digest in [d for d, (record, _) in self._entries.items() if record.org == org]:
                self._drop(digest)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._unknown.clear()
            self._ids.clear()

    def _drop(self, digest: str) -> None:
        self._unknown.pop(digest, None)
        entry = self._entries.pop(digest, None)
        if entry is not None:
            self._ids.pop(entry[0].id, None)
