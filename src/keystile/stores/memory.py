"""``memory://``: keys kept in this process, for tests and demos.

Nothing survives the process, and other processes see none of it. The same
rules as the SQL store hold (unique digest, one active user key per user
and org), under one lock so that threads racing get the same answers a
database would give.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import datetime
from typing import Any

from keystile.errors import KeyConflict
from keystile.stores.base import STORE_OPS, KeyRecord, UsageRow, already_rotated

__all__ = ["MemoryKeyStore"]


class MemoryKeyStore:
    """An in-process key store; also usable from async code (it never waits)."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.Lock()
        self._by_id: dict[str, KeyRecord] = {}
        self._by_digest: dict[str, str] = {}
        self._slots: dict[str, str] = {}  # user slot -> key id
        self.audit_log: deque[Any] = deque(maxlen=10_000)
        self._usage: dict[tuple[str, int, str, int], int] = {}
        self._overrides: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"MemoryKeyStore(keys={len(self._by_id)})"

    def execute(self, op: str, *args: Any) -> Any:
        if op not in STORE_OPS:
            raise ValueError(f"unknown store operation {op!r}")
        with self._lock:
            # "_overrides" is the dict of them: its operation is "_overrides_".
            return getattr(self, "_overrides_" if op == "overrides" else "_" + op)(*args)

    async def aexecute(self, op: str, *args: Any) -> Any:
        return self.execute(op, *args)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    # -- operations (called under the lock) ---------------------------------

    def _release_expired_slot(self, slot: str, now: datetime) -> None:
        holder = self._slots.get(slot)
        if holder is not None and not self._by_id[holder].is_active(now):
            del self._slots[slot]

    def _insert(self, record: KeyRecord, now: datetime) -> None:
        slot = record.slot
        if slot is not None:
            self._release_expired_slot(slot, now)
            if slot in self._slots:
                raise KeyConflict(
                    f"user {record.owner!r} already has an active key in org {record.org!r}"
                )
        if record.digest is not None and record.digest in self._by_digest:
            raise KeyConflict("a key with this secret already exists")
        self._by_id[record.id] = record
        if record.digest is not None:
            self._by_digest[record.digest] = record.id
        if slot is not None:
            self._slots[slot] = record.id

    def _get(self, key_id: str) -> KeyRecord | None:
        return self._by_id.get(key_id)

    def _find_by_digest(self, digest: str) -> KeyRecord | None:
        key_id = self._by_digest.get(digest)
        if key_id is None:
            return None
        record = self._by_id[key_id]
        override = self._overrides.get(record.org)
        return record if override is None else record.replace(org_limit=override)

    def _set_override(self, org: str, limit: str, now: datetime) -> None:
        self._overrides[org] = limit

    def _clear_override(self, org: str) -> bool:
        return self._overrides.pop(org, None) is not None

    def _overrides_(self) -> dict[str, str]:
        return dict(sorted(self._overrides.items()))

    def _find_by_digests(self, digests: list[str]) -> list[KeyRecord]:
        ids = (self._by_digest.get(d) for d in digests)
        return [self._by_id[key_id] for key_id in dict.fromkeys(ids) if key_id is not None]

    def _find_imported(self, lookup_prefix: str) -> list[KeyRecord]:
        return [
            r
            for r in self._by_id.values()
            if r.lookup_prefix == lookup_prefix and r.imported_hash is not None
        ]

    def _list(self, org: str | None, now: datetime) -> list[KeyRecord]:
        keys = [r for r in self._by_id.values() if r.is_active(now)]
        if org is not None:
            keys = [r for r in keys if r.org == org]
        return sorted(keys, key=lambda r: (r.created_at, r.id))

    def _update(self, key_id: str, changes: dict[str, Any]) -> KeyRecord | None:
        old = self._by_id.get(key_id)
        if old is None:
            return None
        new = old.replace(**changes)
        if old.digest != new.digest:
            if old.digest is not None:
                self._by_digest.pop(old.digest, None)
            if new.digest is not None:
                self._by_digest[new.digest] = key_id
        self._by_id[key_id] = new
        return new

    def _revoke(self, key_id: str, now: datetime) -> KeyRecord | None:
        old = self._by_id.get(key_id)
        if old is None:
            return None
        if old.revoked_at is None:
            self._by_id[key_id] = old.replace(revoked_at=now)
        if old.slot is not None and self._slots.get(old.slot) == key_id:
            del self._slots[old.slot]
        return self._by_id[key_id]

    def _revoke_user(self, org: str, user: str, now: datetime) -> list[str]:
        ids = [
            r.id
            for r in self._by_id.values()
            if r.org == org and r.owner == user and r.kind == "user" and r.revoked_at is None
        ]
        for key_id in ids:
            self._revoke(key_id, now)
        return ids

    def _revoke_many(self, key_ids: list[str], now: datetime) -> list[KeyRecord]:
        revoked = []
        for key_id in dict.fromkeys(key_ids):
            old = self._by_id.get(key_id)
            if old is not None and old.revoked_at is None:
                revoked.append(self._revoke(key_id, now))
        return [r for r in revoked if r is not None]

    def _rotate(
        self, old_id: str, new: KeyRecord, old_expires_at: datetime, now: datetime
    ) -> KeyRecord | None:
        old = self._by_id.get(old_id)
        if old is None or not old.is_active(now):
            return None
        successor = max(
            (r for r in self._by_id.values() if r.rotated_from == old_id and r.is_active(now)),
            key=lambda r: (r.created_at, r.id),
            default=None,
        )
        if successor is not None:
            raise already_rotated(old_id, successor.id)
        # The old key leaves the user slot (a key in its grace period does not
        # count) before the new one takes it, as the SQL store does in one
        # transaction.
        held = old.slot if old.slot is not None and self._slots.get(old.slot) == old_id else None
        if held is not None:
            del self._slots[held]
        if old_expires_at <= now:
            updated = old.replace(revoked_at=now)
        else:
            updated = old.replace(expires_at=min(old.expires_at or old_expires_at, old_expires_at))
        self._by_id[old_id] = updated
        try:
            self._insert(new, now)
        except KeyConflict:
            # All or nothing, as the SQL store's transaction: the old key as it was.
            self._by_id[old_id] = old
            if held is not None:
                self._slots[held] = old_id
            raise
        return updated

    def _touch(self, last_used: dict[str, datetime]) -> None:
        for key_id, when in last_used.items():
            old = self._by_id.get(key_id)
            if old is not None and (old.last_used_at is None or old.last_used_at < when):
                self._by_id[key_id] = old.replace(last_used_at=when)

    def _audit(self, events: list[Any]) -> None:
        self.audit_log.extend(events)

    def _audit_events(
        self, org: str | None, key_id: str | None, since: datetime, limit: int
    ) -> list[Any]:
        found = [
            e
            for e in reversed(self.audit_log)
            if e.time >= since
            and (org is None or e.org == org)
            and (key_id is None or e.key_id == key_id)
        ]
        return sorted(found, key=lambda e: e.time, reverse=True)[:limit]

    def _list_all(self, org: str | None) -> list[KeyRecord]:
        keys = [r for r in self._by_id.values() if org is None or r.org == org]
        return sorted(keys, key=lambda r: (r.created_at, r.id))

    def _add_usage(self, counts: dict[tuple[str, int, str, int], int], prune_before: int) -> None:
        usage = self._usage
        for counter, n in counts.items():
            usage[counter] = usage.get(counter, 0) + n
        for counter in [c for c in usage if c[1] < prune_before]:
            del usage[counter]

    def _read_usage(self, key_ids: list[str] | None, org: str | None, since: int) -> list[UsageRow]:
        wanted = None if key_ids is None else set(key_ids)
        rows: list[UsageRow] = []
        for (key_id, day, route, status), n in self._usage.items():
            if day < since or (wanted is not None and key_id not in wanted):
                continue
            if org is not None:
                record = self._by_id.get(key_id)
                if record is None or record.org != org:
                    continue
            rows.append((key_id, day, route, status, n))
        return rows

    def _ping(self) -> None:
        pass
