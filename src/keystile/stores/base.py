"""What every key store keeps and the calls it answers.

A store is a small set of named operations (``STORE_OPS``). The key API and
the request pipeline are written once, as generators that yield
``StoreCall`` values; a sync driver answers them with ``store.execute``, an
async one with ``await store.aexecute``. A backend therefore writes each
operation once: the memory store as plain methods, the SQL store as
functions over a connection that both the sync and the async SQLAlchemy
engines run (``AsyncConnection.run_sync``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from types import MappingProxyType
from typing import Any, Protocol

from keystile.errors import KeyConflict

__all__ = [
    "STORE_OPS",
    "AsyncKeyStore",
    "KeyRecord",
    "KeyStore",
    "StoreCall",
    "UsageRow",
    "already_rotated",
    "freeze",
    "user_slot",
    "utcnow",
]

# The operations a store answers, with their arguments:
#   insert(record, now) -> None                 KeyConflict on a taken user slot
#   get(key_id) -> KeyRecord | None
#   find_by_digest(digest) -> KeyRecord | None
#   find_by_digests(digests: list[str]) -> list[KeyRecord]   those found, any state (leak reports)
#   find_imported(lookup_prefix) -> list[KeyRecord]
#   list(org: str | None, now) -> list[KeyRecord]          active keys, oldest first
#   update(key_id, changes: dict) -> KeyRecord | None      any KeyRecord fields
#   revoke(key_id, now) -> KeyRecord | None                 None if unknown
#   revoke_user(org, user, now) -> list[str]                ids revoked
#   revoke_many(key_ids: list[str], now) -> list[KeyRecord]  those revoked by this call
#   rotate(old_id, new_record, old_expires_at, now) -> KeyRecord | None  old record
#        None if the old key is unknown, revoked or expired; KeyConflict
#        (already_rotated) if it has an active successor (a key rotated_from
#        it, in the old key's org), checked under the same lock or row lock
#        as the change, so of two racing rotations one wins
#   touch(last_used: dict[str, datetime]) -> None           write-behind of last_used_at
#   audit(events: list[AuditEvent]) -> None                 append audit events
#   ping() -> None
#   list_all(org: str | None) -> list[KeyRecord]           revoked and expired too, oldest first
#   add_usage(counts: dict[Count, int], prune_before: int) -> None
#        adds each count to its (key_id, day, route, status) row; days are days
#        since 1970-01-01 (UTC); rows of days before prune_before are deleted
#   read_usage(key_ids: list[str] | None, org: str | None, since: int) -> list[UsageRow]
#        rows of those keys (or of the org's keys) from day ``since`` on
#   audit_events(org: str | None, key_id: str | None, since: datetime, limit: int)
#        -> list[AuditEvent]                                    newest first
#   set_override(org, limit: str, now) -> None    an org limit that replaces limits.org
#   clear_override(org) -> bool                   whether there was one
#   overrides() -> dict[str, str]                 org -> limit
STORE_OPS = frozenset(
    {
        "set_override",
        "clear_override",
        "overrides",
        "add_usage",
        "audit_events",
        "list_all",
        "read_usage",
        "audit",
        "insert",
        "get",
        "find_by_digest",
        "find_by_digests",
        "find_imported",
        "list",
        "update",
        "revoke",
        "revoke_user",
        "revoke_many",
        "rotate",
        "touch",
        "ping",
    }
)


# A usage row: (key id, day as days since 1970-01-01 UTC, route pattern, status, count).
UsageRow = tuple[str, int, str, int, int]


# The real clock: a partial, called in C, as every request reads it.
utcnow: Callable[[], datetime] = partial(datetime.now, timezone.utc)


def freeze(value: Any) -> Any:
    """A read-only copy of nested JSON-like data (dicts become mapping proxies)."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def already_rotated(old_id: str, successor_id: str) -> KeyConflict:
    """The refusal of a second rotation: the successor is the key to rotate next.

    A second successor would inherit the first grace's ``expires_at`` and
    die with the old key, so ``rotate`` refuses while one is active.
    """
    return KeyConflict(
        f"key {old_id} was already rotated: its successor is {successor_id}; "
        f"rotate {successor_id} instead"
    )


def user_slot(org: str, owner: str) -> str:
    """The value under the unique index that allows one active user key per (user, org)."""
    return f"{org}\x1f{owner}"


@dataclass(frozen=True)
class KeyRecord:
    """A stored key. Holds the digest of the secret, never the secret."""

    id: str
    digest: str | None
    prefix: str
    last4: str
    name: str
    scopes: tuple[str, ...]
    org: str
    owner: str | None
    kind: str  # "user" | "bot"
    type: str  # "secret" | "publishable" | "embed"
    created_at: datetime
    plan: str | None = None
    rate_limit: str | None = None
    allowed_origins: tuple[str, ...] = ()
    allowed_ips: tuple[str, ...] = ()  # CIDRs; empty: any address
    restrictions: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: freeze({}))
    metadata: Mapping[str, Any] = field(default_factory=lambda: freeze({}))
    created_by: str | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    rotated_from: str | None = None
    # Keys imported from another system: their hash and the public part used
    # to find them, until the first successful use upgrades them to a digest.
    imported_hash: str | None = field(default=None, repr=False)
    lookup_prefix: str | None = None
    # The org's limit override as the store had it when the key was looked up
    # for a request (``find_by_digest``); not a column of the key.
    org_limit: str | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        # The digest is not a secret, but it lets an offline guess be checked
        # against a stolen pepper; keep it out of logs along with the rest.
        return (
            f"KeyRecord(id={self.id!r}, prefix={self.prefix!r}, name={self.name!r}, "
            f"org={self.org!r}, kind={self.kind!r}, type={self.type!r})"
        )

    def is_active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def status(self, now: datetime) -> str:
        """``active``, ``revoked`` or ``expired`` (revoked wins when both hold)."""
        if self.revoked_at is not None:
            return "revoked"
        return "active" if self.is_active(now) else "expired"

    @property
    def slot(self) -> str | None:
        if self.kind != "user" or self.owner is None:
            return None
        return user_slot(self.org, self.owner)

    def replace(self, **changes: Any) -> KeyRecord:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class StoreCall:
    """One store operation that a flow asks its driver to perform."""

    op: str
    args: tuple[Any, ...] = ()

    def __repr__(self) -> str:
        # The arguments can hold a key's digest (``find_by_digest``), kept
        # out of reprs for the reason ``KeyRecord`` gives.
        return f"StoreCall({self.op!r}, <{len(self.args)} args>)"


class KeyStore(Protocol):
    """A store answering ``STORE_OPS`` synchronously."""

    url: str

    def execute(self, op: str, *args: Any) -> Any: ...

    def close(self) -> None: ...


class AsyncKeyStore(Protocol):
    """A store answering ``STORE_OPS`` without blocking the event loop."""

    url: str

    async def aexecute(self, op: str, *args: Any) -> Any: ...

    async def aclose(self) -> None: ...
