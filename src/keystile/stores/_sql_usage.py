"""Usage counts, org limit overrides, and the reads that look back (SPEC 8 and 10).

Counts arrive from the write-behind buffer as a dict of (key, day, route,
status) to a number, and are *added* to their rows: an upsert per dialect,
many rows to a statement, so several processes (or hosts) writing the same
row sum exactly and a flush is a bounded number of statements, never one
per request or per row. ``OPS`` is every store operation, the key
operations of ``_sql_schema`` and these.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

from keystile.stores import _sql_schema as schema
from keystile.stores.base import KeyRecord, UsageRow

__all__ = ["OPS", "ROWS_PER_STATEMENT", "org_limits_table", "usage_table"]

# Five parameters a row: 200 rows stay under every driver's limit (SQLite's
# oldest is 999 parameters a statement).
ROWS_PER_STATEMENT = 200
EPOCH = date(1970, 1, 1)

usage_table = sa.Table(
    "keystile_usage",
    schema.metadata,
    sa.Column("key_id", schema._Id, primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("route", sa.String(255), primary_key=True),
    sa.Column("status", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("count", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
    sa.Index("ix_keystile_usage_day", "day"),
)
_u = usage_table.c

org_limits_table = sa.Table(
    "keystile_org_limits",
    schema.metadata,
    sa.Column("org", schema._Name, primary_key=True),
    sa.Column("org_limit", sa.String(64), nullable=False),
    sa.Column("updated_at", schema._Timestamp, nullable=False),
)
_o = org_limits_table.c


def _day(number: int) -> date:
    return EPOCH + timedelta(days=number)


def _number(day: date) -> int:
    return (day - EPOCH).days


def _upsert(conn: Connection, rows: list[dict[str, Any]]) -> Any:
    """An INSERT of ``rows`` that adds ``count`` to rows that exist, in the dialect's words.

    (The conflict clause must name the very statement it extends: its
    ``excluded``/``inserted`` columns belong to that statement.)
    """
    backend = conn.dialect.name
    key = [_u.key_id, _u.day, _u.route, _u.status]
    if backend == "postgresql":
        pg = postgresql.insert(usage_table).values(rows)
        return pg.on_conflict_do_update(
            index_elements=key, set_={"count": _u.count + pg.excluded.count}
        )
    if backend == "sqlite":
        lite = sqlite.insert(usage_table).values(rows)
        return lite.on_conflict_do_update(
            index_elements=key, set_={"count": _u.count + lite.excluded.count}
        )
    my = mysql.insert(usage_table).values(rows)
    return my.on_duplicate_key_update(count=_u.count + my.inserted.count)


def op_add_usage(
    conn: Connection, counts: dict[tuple[str, int, str, int], int], prune_before: int
) -> None:
    rows = [
        {"key_id": k, "day": _day(d), "route": r[:255], "status": s, "count": n}
        for (k, d, r, s), n in counts.items()
    ]
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        conn.execute(_upsert(conn, rows[start : start + ROWS_PER_STATEMENT]))
    conn.execute(sa.delete(usage_table).where(_u.day < _day(prune_before)))


def op_read_usage(
    conn: Connection, key_ids: list[str] | None, org: str | None, since: int
) -> list[UsageRow]:
    query = sa.select(_u.key_id, _u.day, _u.route, _u.status, _u.count).where(_u.day >= _day(since))
    if key_ids is not None:
        query = query.where(_u.key_id.in_(key_ids))
    if org is not None:
        query = query.join(schema.keys_table, schema.keys_table.c.id == _u.key_id).where(
            schema.keys_table.c.org == org
        )
    return [(r[0], _number(r[1]), r[2], int(r[3]), int(r[4])) for r in conn.execute(query)]


def op_audit_events(
    conn: Connection, org: str | None, key_id: str | None, since: datetime, limit: int
) -> list[Any]:
    from keystile.audit import AuditEvent

    a = schema.audit_table.c
    query = sa.select(schema.audit_table).where(a.time >= schema._to_db(since))
    if org is not None:
        query = query.where(a.org == org)
    if key_id is not None:
        query = query.where(a.key_id == key_id)
    rows = conn.execute(query.order_by(a.time.desc(), a.id.desc()).limit(limit))
    return [
        AuditEvent(
            r.event,
            schema._from_db(r.time),  # type: ignore[arg-type]
            key_id=r.key_id,
            org=r.org,
            reason=r.reason,
            client=r.client,
            status=r.status,
        )
        for r in rows
    ]


def op_list_all(conn: Connection, org: str | None) -> list[KeyRecord]:
    k = schema.keys_table.c
    query = sa.select(schema.keys_table)
    if org is not None:
        query = query.where(k.org == org)
    return [schema._record(r) for r in conn.execute(query.order_by(k.created_at, k.id))]


def op_find_by_digest(conn: Connection, digest: str) -> KeyRecord | None:
    """The key, with its org's limit override in the same statement (a join on the key)."""
    k = schema.keys_table.c
    row = conn.execute(
        sa.select(schema.keys_table, _o.org_limit)
        .outerjoin(org_limits_table, _o.org == k.org)
        .where(k.digest == digest)
    ).first()
    if row is None:
        return None
    record = schema._record(row)
    limit = row._mapping["org_limit"]
    return record if limit is None else record.replace(org_limit=limit)


def op_set_override(conn: Connection, org: str, limit: str, now: datetime) -> None:
    updated = conn.execute(
        sa.update(org_limits_table)
        .where(_o.org == org)
        .values(org_limit=limit, updated_at=schema._to_db(now))
    )
    if updated.rowcount == 0:
        conn.execute(
            sa.insert(org_limits_table).values(
                org=org, org_limit=limit, updated_at=schema._to_db(now)
            )
        )


def op_clear_override(conn: Connection, org: str) -> bool:
    return bool(conn.execute(sa.delete(org_limits_table).where(_o.org == org)).rowcount)


def op_overrides(conn: Connection) -> dict[str, str]:
    rows = conn.execute(sa.select(_o.org, _o.org_limit).order_by(_o.org))
    return {r[0]: r[1] for r in rows}


OPS: dict[str, Callable[..., Any]] = {
    **schema.OPS,
    "add_usage": op_add_usage,
    "read_usage": op_read_usage,
    "audit_events": op_audit_events,
    "list_all": op_list_all,
    "find_by_digest": op_find_by_digest,
    "set_override": op_set_override,
    "clear_override": op_clear_override,
    "overrides": op_overrides,
}
