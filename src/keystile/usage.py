"""Reading usage back: per-key request counts by day (SPEC section 8).

Counting happens on the request path (``Keystile.count_use``: a dict
increment) and reaches the store with ``last_used_at``, written behind. The
reads here are flows, as the key lifecycle's are: they yield ``StoreCall``
values that ``ks.keys``'s sync and async drivers answer, so one copy of the
logic serves both.

    >>> ks.keys.usage(key_id, days=30)  # doctest: +SKIP
    [UsageDay(date=datetime.date(2026, 11, 4), total=0, by_status={}, by_route={}), ...]
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from keystile.errors import KeyInputError, KeyNotFound
from keystile.stores.base import KeyRecord, StoreCall, UsageRow

__all__ = [
    "MAX_DAYS",
    "STALE_AFTER",
    "UsageDay",
    "check_usage_days",
    "daily",
    "day_number",
    "is_stale",
    "totals_flow",
    "unused_since",
    "usage_flow",
]

EPOCH = date(1970, 1, 1)
MAX_DAYS = 366
# A working key unused this long is one to review and likely revoke (the
# "monitor lastUsedAt, revoke stale keys" advice); also the default retention.
STALE_AFTER = timedelta(days=90)


@dataclass(frozen=True)
class UsageDay:
    """One UTC day of one key's requests: the total, by status and by route pattern."""

    date: date
    total: int = 0
    by_status: Mapping[int, int] = field(default_factory=dict)
    by_route: Mapping[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The day as the HTTP API and ``keys usage --json`` give it (statuses as strings)."""
        return {
            "date": self.date.isoformat(),
            "total": self.total,
            "byStatus": {str(status): n for status, n in self.by_status.items()},
            "byRoute": dict(self.by_route),
        }


def unused_since(record: KeyRecord, cutoff: datetime) -> bool:
    """Whether ``record`` went unused since ``cutoff``: last used before it, or never.

    A key never used counts only if it was created before ``cutoff``: a key
    made yesterday is new, not forgotten.
    """
    return (record.last_used_at or record.created_at) < cutoff


def is_stale(record: KeyRecord, now: datetime) -> bool:
    """A key that still works but went unused for ``STALE_AFTER`` (never used, made that long ago).

    Revoked and expired keys are never stale: there is nothing left to do about them.
    """
    return record.is_active(now) and unused_since(record, now - STALE_AFTER)


def day_number(when: datetime) -> int:
    """Days since 1970-01-01 of ``when``'s UTC date: how the store keys usage rows."""
    return (when.date() - EPOCH).days


def check_usage_days(days: Any, *, most: int = MAX_DAYS) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= most:
        raise KeyInputError(f"days must be a whole number from 1 to {most}", field="days")
    return days


def daily(rows: Iterable[UsageRow], today: int, days: int) -> list[UsageDay]:
    """One ``UsageDay`` per day of the last ``days`` (today included), oldest first, zeros too."""
    first = today - days + 1
    totals = [0] * days
    statuses: list[dict[int, int]] = [{} for _ in range(days)]
    routes: list[dict[str, int]] = [{} for _ in range(days)]
    for _, day, route, status, count in rows:
        i = day - first
        if 0 <= i < days:
            totals[i] += count
            statuses[i][status] = statuses[i].get(status, 0) + count
            routes[i][route] = routes[i].get(route, 0) + count
    return [
        UsageDay(
            EPOCH + timedelta(days=first + i),
            totals[i],
            dict(sorted(statuses[i].items())),
            dict(sorted(routes[i].items())),
        )
        for i in range(days)
    ]


Flow = Generator[StoreCall, Any, Any]


def usage_flow(key_id: str, days: int, now: datetime) -> Flow:
    """``ks.keys.usage``: the key must exist (``KeyNotFound``), then its days."""
    record: KeyRecord | None = yield StoreCall("get", (key_id,))
    if record is None:
        raise KeyNotFound(f"no key with id {key_id!r}")
    today = day_number(now)
    rows: list[UsageRow] = yield StoreCall("read_usage", ([key_id], None, today - days + 1))
    return daily(rows, today, days)


def totals_flow(org: str | None, days: int, now: datetime) -> Flow:
    """``ks.keys.usage_totals``: each active key of ``org`` (0 if unused), and any other used."""
    keys: list[KeyRecord] = yield StoreCall("list", (org, now))
    today = day_number(now)
    rows: list[UsageRow] = yield StoreCall("read_usage", (None, org, today - days + 1))
    totals = dict.fromkeys((r.id for r in keys), 0)
    for key_id, _, _, _, count in rows:
        totals[key_id] = totals.get(key_id, 0) + count
    return totals
