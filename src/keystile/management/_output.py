"""The JSON the management API shows: keys, usage days and audit events (no I/O).

Each shape is built here, once, from what the key API returns; nothing
here can hold a secret, since records, usage rows and audit events hold
none (the one secret the API ever shows, a new key's ``apiKey``, is added
by the create and rotate operations themselves).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keystile.audit import AuditEvent
    from keystile.stores.base import KeyRecord
    from keystile.usage import UsageDay

__all__ = ["present", "present_day", "present_event", "total_of"]


def present(record: KeyRecord, requests30d: int | None) -> dict[str, Any]:
    """A key as the API shows it: never its secret, digest or owner's session.

    ``requests30d`` is the key's requests over the last 30 days, or ``None``
    when the engine does not count usage (``usage: {enabled: false}``): a
    zero would claim an idle key.
    """
    return {
        "id": record.id,
        "name": record.name,
        "keyPrefix": record.prefix,
        "last4": record.last4,
        "type": record.type,
        "kind": record.kind,
        "owner": record.owner if record.kind == "user" else None,
        "scopes": list(record.scopes),
        "rateLimit": record.rate_limit,
        # Address allowlists come with key policies (SPEC 10); until then
        # every key is usable from anywhere, which an empty list says.
        "allowedIps": list(record.allowed_ips),
        "requests30d": requests30d,
        "lastUsedAt": _iso(record.last_used_at),
        "expiresAt": _iso(record.expires_at),
        "createdAt": _iso(record.created_at),
    }


def present_day(day: UsageDay) -> dict[str, Any]:
    """One UTC day of a key's usage; JSON object keys are strings, so statuses are too."""
    return {
        "date": day.date.isoformat(),
        "total": day.total,
        "byStatus": {str(status): n for status, n in day.by_status.items()},
        "byRoute": dict(day.by_route),
    }


def present_event(event: AuditEvent) -> dict[str, Any]:
    """One audit event: what happened to which key, from where; never a secret."""
    return {
        "time": _iso(event.time),
        "type": event.event,
        "keyId": event.key_id,
        "reason": event.reason,
        "client": event.client,
    }


def total_of(days: Iterable[UsageDay]) -> int:
    return sum(day.total for day in days)


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    if when.tzinfo is None:  # some SQL backends hand back naive UTC
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
