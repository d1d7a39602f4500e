"""The key store's tables and operations, written once over a SQLAlchemy ``Connection``.

``keystile.stores.sql`` runs these functions on a sync engine and, through
``AsyncConnection.run_sync``, on an async one; see its docstring for the
unique indexes that let the database decide races.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection

from keystile.errors import KeyConflict, StoreUnavailable
from keystile.stores.base import STORE_OPS, KeyRecord, already_rotated, freeze

SCHEMA_VERSION = 3  # 2: keystile_usage; 3: keystile_keys.allowed_ips

# Creating the tables may wait for another process holding the schema lock:
# it gets this much time rather than store_timeout.
SCHEMA_TIMEOUT = 10.0

metadata = sa.MetaData()

_Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
_Id = sa.String(32)
_Name = sa.String(255)

keys_table = sa.Table(
    "keystile_keys",
    metadata,
    sa.Column("id", _Id, primary_key=True),
    sa.Column("digest", sa.String(64), nullable=True),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("last4", sa.String(4), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("org", _Name, nullable=False),
    sa.Column("owner", _Name, nullable=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("plan", sa.String(64), nullable=True),
    sa.Column("rate_limit", sa.String(64), nullable=True),
    sa.Column("allowed_origins", sa.JSON, nullable=False),
    # Added in schema version 3: nullable, so _migrate can add it to a table
    # that has rows; NULL reads as no allowlist.
    sa.Column("allowed_ips", sa.JSON, nullable=True),
    sa.Column("restrictions", sa.JSON, nullable=False),
    sa.Column("meta", sa.JSON, nullable=False),
    sa.Column("created_by", _Name, nullable=True),
    sa.Column("created_at", _Timestamp, nullable=False),
    sa.Column("expires_at", _Timestamp, nullable=True),
    sa.Column("last_used_at", _Timestamp, nullable=True),
    sa.Column("revoked_at", _Timestamp, nullable=True),
    sa.Column("rotated_from", _Id, nullable=True),
    sa.Column("imported_hash", sa.String(255), nullable=True),
    sa.Column("lookup_prefix", sa.String(64), nullable=True),
    sa.Column("user_slot", sa.String(255), nullable=True),
    sa.Index("ix_keystile_keys_digest", "digest", unique=True),
    sa.Index("ix_keystile_keys_user_slot", "user_slot", unique=True),
    sa.Index("ix_keystile_keys_org", "org"),
    sa.Index("ix_keystile_keys_lookup_prefix", "lookup_prefix"),
)

audit_table = sa.Table(
    "keystile_audit",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("time", _Timestamp, nullable=False),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("key_id", _Id, nullable=True),
    sa.Column("org", _Name, nullable=True),
    sa.Column("reason", sa.String(255), nullable=True),
    sa.Column("client", sa.String(64), nullable=True),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Index("ix_keystile_audit_time", "time"),
)

schema_table = sa.Table(
    "keystile_schema",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", _Timestamp, nullable=False),
)


# -- conversions --------------------------------------------------------------


def _to_db(when: datetime | None) -> datetime | None:
    """Naive UTC: the one form all three databases store alike."""
    if when is None:
        return None
    return when.astimezone(timezone.utc).replace(tzinfo=None)


def _from_db(when: datetime | None) -> datetime | None:
    return None if when is None else when.replace(tzinfo=timezone.utc)


_TIME_FIELDS = ("created_at", "expires_at", "last_used_at", "revoked_at")


def _row_values(record: KeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "digest": record.digest,
        "prefix": record.prefix,
        "last4": record.last4,
        "name": record.name,
        "scopes": list(record.scopes),
        "org": record.org,
        "owner": record.owner,
        "kind": record.kind,
        "type": record.type,
        "plan": record.plan,
        "rate_limit": record.rate_limit,
        "allowed_origins": list(record.allowed_origins),
        "allowed_ips": list(record.allowed_ips),
        "restrictions": {k: list(v) for k, v in record.restrictions.items()},
        "meta": _thaw(record.metadata),
        "created_by": record.created_by,
        "rotated_from": record.rotated_from,
        "imported_hash": record.imported_hash,
        "lookup_prefix": record.lookup_prefix,
        "user_slot": record.slot if record.revoked_at is None else None,
        **{name: _to_db(getattr(record, name)) for name in _TIME_FIELDS},
    }


def _thaw(value: Any) -> Any:
    if hasattr(value, "items"):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _record(row: sa.Row[Any]) -> KeyRecord:
    m = row._mapping
    return KeyRecord(
        id=m["id"],
        digest=m["digest"],
        prefix=m["prefix"],
        last4=m["last4"],
        name=m["name"],
        scopes=tuple(m["scopes"]),
        org=m["org"],
        owner=m["owner"],
        kind=m["kind"],
        type=m["type"],
        plan=m["plan"],
        rate_limit=m["rate_limit"],
        allowed_origins=tuple(m["allowed_origins"]),
        allowed_ips=tuple(m["allowed_ips"] or ()),
        restrictions=freeze(m["restrictions"]),
        metadata=freeze(m["meta"]),
        created_by=m["created_by"],
        rotated_from=m["rotated_from"],
        imported_hash=m["imported_hash"],
        lookup_prefix=m["lookup_prefix"],
        created_at=_from_db(m["created_at"]) or datetime.now(timezone.utc),
        expires_at=_from_db(m["expires_at"]),
        last_used_at=_from_db(m["last_used_at"]),
        revoked_at=_from_db(m["revoked_at"]),
    )


# -- operations: each runs inside one transaction -----------------------------

_k = keys_table.c


def _select_one(conn: Connection, where: Any) -> KeyRecord | None:
    row = conn.execute(sa.select(keys_table).where(where)).first()
    return None if row is None else _record(row)


def _active(now: datetime) -> Any:
    return sa.and_(_k.revoked_at.is_(None), sa.or_(_k.expires_at.is_(None), _k.expires_at > now))


def op_insert(conn: Connection, record: KeyRecord, now: datetime) -> None:
    slot = record.slot
    if slot is not None:
        # An expired key lets go of its user slot here, inside the transaction
        # whose insert the unique index then judges.
        conn.execute(
            sa.update(keys_table)
            .where(_k.user_slot == slot, _k.expires_at <= _to_db(now))
            .values(user_slot=None)
        )
    try:
        conn.execute(sa.insert(keys_table).values(_row_values(record)))
    except sa_exc.IntegrityError as exc:
        if slot is not None:
            raise KeyConflict(
                f"user {record.owner!r} already has an active key in org {record.org!r}"
            ) from None
        raise KeyConflict("the key conflicts with an existing key") from exc


def op_get(conn: Connection, key_id: str) -> KeyRecord | None:
    return _select_one(conn, _k.id == key_id)


def op_find_by_digest(conn: Connection, digest: str) -> KeyRecord | None:
    return _select_one(conn, _k.digest == digest)


# Bound parameters per IN (...) list: far below SQLite's oldest limit (999).
IN_CHUNK = 500


def _chunks(values: list[str]) -> list[list[str]]:
    unique = list(dict.fromkeys(values))
    return [unique[i : i + IN_CHUNK] for i in range(0, len(unique), IN_CHUNK)]


def op_find_by_digests(conn: Connection, digests: list[str]) -> list[KeyRecord]:
    """Every key among ``digests``, a statement per 500: a leak report's batch lookup."""
    found: list[KeyRecord] = []
    for chunk in _chunks(digests):
        rows = conn.execute(sa.select(keys_table).where(_k.digest.in_(chunk)))
        found.extend(_record(r) for r in rows)
    return found


def op_find_imported(conn: Connection, lookup_prefix: str) -> list[KeyRecord]:
    rows = conn.execute(
        sa.select(keys_table).where(
            _k.lookup_prefix == lookup_prefix, _k.imported_hash.is_not(None)
        )
    )
    return [_record(r) for r in rows]


def op_list(conn: Connection, org: str | None, now: datetime) -> list[KeyRecord]:
    query = sa.select(keys_table).where(_active(_to_db(now)))  # type: ignore[arg-type]
    if org is not None:
        query = query.where(_k.org == org)
    return [_record(r) for r in conn.execute(query.order_by(_k.created_at, _k.id))]


def op_update(conn: Connection, key_id: str, changes: dict[str, Any]) -> KeyRecord | None:
    old = _select_one(conn, _k.id == key_id)
    if old is None:
        return None
    new = old.replace(**changes)
    values = _row_values(new)
    del values["id"]
    conn.execute(sa.update(keys_table).where(_k.id == key_id).values(values))
    return new


def op_revoke(conn: Connection, key_id: str, now: datetime) -> KeyRecord | None:
    conn.execute(
        sa.update(keys_table)
        .where(_k.id == key_id, _k.revoked_at.is_(None))
        .values(revoked_at=_to_db(now), user_slot=None)
    )
    return _select_one(conn, _k.id == key_id)


def op_revoke_user(conn: Connection, org: str, user: str, now: datetime) -> list[str]:
    where = sa.and_(_k.org == org, _k.owner == user, _k.kind == "user", _k.revoked_at.is_(None))
    ids = [r.id for r in conn.execute(sa.select(_k.id).where(where))]
    if ids:
        conn.execute(
            sa.update(keys_table)
            .where(_k.id.in_(ids))
            .values(revoked_at=_to_db(now), user_slot=None)
        )
    return ids


def op_revoke_many(conn: Connection, key_ids: list[str], now: datetime) -> list[KeyRecord]:
    """Revoke the keys of ``key_ids`` not yet revoked; the records of those it revoked."""
    revoked: list[KeyRecord] = []
    for chunk in _chunks(key_ids):
        where = sa.and_(_k.id.in_(chunk), _k.revoked_at.is_(None))
        rows = [_record(r) for r in conn.execute(sa.select(keys_table).where(where))]
        if rows:
            ids = [r.id for r in rows]
            conn.execute(
                sa.update(keys_table)
                .where(_k.id.in_(ids), _k.revoked_at.is_(None))
                .values(revoked_at=_to_db(now), user_slot=None)
            )
            revoked.extend(r.replace(revoked_at=now) for r in rows)
    return revoked


def op_rotate(
    conn: Connection, old_id: str, new: KeyRecord, old_expires_at: datetime, now: datetime
) -> KeyRecord | None:
    row = conn.execute(sa.select(keys_table).where(_k.id == old_id).with_for_update()).first()
    if row is None:
        return None
    old = _record(row)
    if not old.is_active(now):
        return None
    # Read after the row lock is held: a rotation that got it first has
    # committed its successor by then (READ COMMITTED on PostgreSQL; on
    # MariaDB this is the transaction's first consistent read, so its
    # snapshot is taken now). The org's index narrows the search.
    successor = conn.execute(
        sa.select(_k.id)
        .where(_k.org == old.org, _k.rotated_from == old_id)
        .where(_active(_to_db(now)))  # type: ignore[arg-type]
        .order_by(_k.created_at.desc(), _k.id.desc())
        .limit(1)
    ).scalar()
    if successor is not None:
        raise already_rotated(old_id, successor)
    if old_expires_at <= now:
        updated = old.replace(revoked_at=now)
    else:
        updated = old.replace(expires_at=min(old.expires_at or old_expires_at, old_expires_at))
    conn.execute(
        sa.update(keys_table)
        .where(_k.id == old_id)
        .values(
            revoked_at=_to_db(updated.revoked_at),
            expires_at=_to_db(updated.expires_at),
            user_slot=None,
        )
    )
    op_insert(conn, new, now)
    return updated


def op_touch(conn: Connection, last_used: dict[str, datetime]) -> None:
    if not last_used:
        return
    stmt = (
        sa.update(keys_table)
        .where(_k.id == sa.bindparam("key_id"))
        .where(sa.or_(_k.last_used_at.is_(None), _k.last_used_at < sa.bindparam("when")))
        .values(last_used_at=sa.bindparam("when"))
    )
    conn.execute(stmt, [{"key_id": k, "when": _to_db(v)} for k, v in last_used.items()])


def op_audit(conn: Connection, events: list[Any]) -> None:
    """Append audit events (``keystile.audit.AuditEvent``) in one statement."""
    if events:
        conn.execute(
            sa.insert(audit_table),
            [
                {
                    "time": _to_db(e.time),
                    "event": e.event,
                    "key_id": e.key_id,
                    "org": e.org,
                    "reason": (e.reason or "")[:255] or None,
                    "client": e.client,
                    "status": e.status,
                }
                for e in events
            ],
        )


def op_ping(conn: Connection) -> None:
    conn.execute(sa.select(1))


# The key operations; ``_sql_usage.OPS`` adds usage and the reads that look back.
OPS: dict[str, Callable[..., Any]] = {
    name: globals()["op_" + name] for name in STORE_OPS if "op_" + name in globals()
}


def create_schema(conn: Connection) -> None:
    """Create the tables if missing and record the schema version.

    Processes starting together on a fresh database would race to create
    the same tables; a database-wide lock (released with the transaction on
    PostgreSQL, explicitly on MariaDB) makes them take turns. SQLite
    serialises writers on its own.
    """
    backend = conn.dialect.name
    if backend == "postgresql":
        # The connection's statement_timeout is store_timeout; waiting for
        # another process's DDL may take longer than one request should.
        conn.execute(sa.text(f"SET LOCAL statement_timeout = {int(SCHEMA_TIMEOUT * 1000)}"))
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7315022901)"))
    elif backend in ("mysql", "mariadb"):
        conn.execute(sa.text("SELECT GET_LOCK('keystile_schema', 30)"))
    try:
        _create_tables(conn)
    finally:
        if backend in ("mysql", "mariadb"):
            conn.execute(sa.text("SELECT RELEASE_LOCK('keystile_schema')"))


def _create_tables(conn: Connection) -> None:
    metadata.create_all(conn, checkfirst=True)
    current = conn.execute(sa.select(sa.func.max(schema_table.c.version))).scalar()
    if current is not None and current < SCHEMA_VERSION:
        _migrate(conn, current)
    # create_all has just added any table a newer version brings (2: keystile_usage).
    if current is None or current < SCHEMA_VERSION:
        conn.execute(
            sa.insert(schema_table).values(
                version=SCHEMA_VERSION, applied_at=_to_db(datetime.now(timezone.utc))
            )
        )
    elif current > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"the key store's schema is version {current}; this keystile knows "
            f"up to {SCHEMA_VERSION}: upgrade keystile"
        )


def _migrate(conn: Connection, current: int) -> None:
    """Bring tables made by an older keystile up to this version, in place.

    ``create_all`` adds missing tables (version 2's usage table); columns
    added to an existing table are added here.
    """
    if current < 3:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("keystile_keys")}
        if "allowed_ips" not in columns:
            kind = sa.JSON().compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE keystile_keys ADD COLUMN allowed_ips {kind}"))
