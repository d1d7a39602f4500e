"""``keystile db init`` and ``db status``: the tables, and whether both backends answer.

``db init`` says whether it created the tables or found them there (run
twice, it is a no-op, exit 0). ``db status`` answers "what is this deploy
talking to?": for the store, its backend and server version, keystile's
schema version, one round trip's latency and the row counts; for the
limiter, its storage, server version and latency. A backend that does not
answer is reported and the command exits 3, as every store outage does.
URLs are printed with their passwords masked.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any, TextIO

from keystile._cli_command import EXIT_OK, EXIT_UNAVAILABLE, engine, print_json
from keystile._cli_format import safe_url
from keystile.errors import KeystileError
from keystile.stores import is_memory_url

__all__ = ["add_commands"]


def add_commands(db_commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """``init`` and ``status`` on the ``keystile db`` subparsers."""
    common = list(parents)[:1]
    init = db_commands.add_parser("init", parents=common, help="create the store's tables")
    init.set_defaults(func=_init)
    status = db_commands.add_parser(
        "status", parents=parents, help="versions, latency and row counts of store and limiter"
    )
    status.set_defaults(func=_status)


def _sql_engine(store: Any) -> Any:
    return getattr(store, "engine", None)


def _init(args: argparse.Namespace, out: TextIO) -> int:
    with engine(args) as ks:
        if is_memory_url(ks.config.store):
            out.write(f"{ks.config.store} has no tables to create\n")
            return EXIT_OK
        sql = _sql_engine(ks.store)
        existed = sql is not None and _has_tables(sql)
        ks.init_store()
    where = safe_url(ks.config.store)
    if existed:
        out.write(f"ok: the key tables already exist in {where} (nothing to do)\n")
    else:
        out.write(f"ok: created the key tables in {where}\n")
    return EXIT_OK


def _has_tables(sql: Any) -> bool:
    import sqlalchemy as sa

    from keystile.errors import StoreUnavailable

    try:
        return bool(sa.inspect(sql).has_table("keystile_keys"))
    except sa.exc.SQLAlchemyError as exc:
        raise StoreUnavailable(f"the key store is unavailable: {type(exc).__name__}") from None


def _timed(call: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return (time.perf_counter() - start) * 1000, result


def _store_status(ks: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"url": safe_url(ks.config.store)}
    sql = _sql_engine(ks.store)
    if sql is None:
        ms, _ = _timed(lambda: ks.store.execute("ping"))
        data.update(backend="memory", server_version=None, schema_version=None)
        data["latency_ms"] = round(ms, 1)
        data["counts"] = {"keys": len(ks.keys.list_all()), "usage_rows": None, "audit_events": None}
        return data
    import sqlalchemy as sa

    from keystile.stores._sql_schema import audit_table, keys_table, schema_table
    from keystile.stores._sql_usage import usage_table

    def count(table: Any) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)

    # Straight on the engine, not through the store: status must not create
    # the tables that init would (the store creates them on first use).
    exists = _has_tables(sql)
    with sql.connect() as conn:
        ms, _ = _timed(lambda: conn.execute(sa.text("SELECT 1")))  # connected: one round trip
        info = sql.dialect.server_version_info
        data.update(
            backend=sql.dialect.name,
            server_version=".".join(map(str, info)) if info else None,
            latency_ms=round(ms, 1),
            schema_version=None,
            counts=None,
        )
        if exists:
            data["schema_version"] = conn.execute(
                sa.select(sa.func.max(schema_table.c.version))
            ).scalar()
            data["counts"] = {
                "keys": count(keys_table),
                "usage_rows": count(usage_table),
                "audit_events": count(audit_table),
            }
    return data


def _limiter_status(ks: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"storage": safe_url(ks.config.limiter.storage)}
    limiter = ks.limiter
    limiter.warm_up()  # connects and loads the script: not a round trip's time
    ms, _ = _timed(limiter.warm_up)
    data["latency_ms"] = round(ms, 1)
    client = getattr(limiter, "_client", None)
    data["server_version"] = None
    if client is not None:
        info = client().info("server")
        if isinstance(info, dict):  # a cluster answers per node; its first node's is enough
            info = next(iter(info.values()), {}) if "redis_version" not in info else info
            if isinstance(info, dict):
                data["server_version"] = info.get("redis_version")
    return data


def _status(args: argparse.Namespace, out: TextIO) -> int:
    report: dict[str, Any] = {}
    status = EXIT_OK
    with engine(args) as ks:
        for name, probe in (("store", _store_status), ("limiter", _limiter_status)):
            try:
                report[name] = probe(ks)
            except (KeystileError, OSError) as exc:
                report[name] = {"error": str(exc).splitlines()[0] if str(exc) else "failed"}
                status = EXIT_UNAVAILABLE
            except Exception as exc:  # a driver's own error: still a line, not a traceback
                report[name] = {"error": f"{type(exc).__name__}"}
                status = EXIT_UNAVAILABLE
    if args.json:
        print_json(out, report)
        return status
    for name, data in report.items():
        if "error" in data:
            out.write(f"{name}:   unavailable: {data['error']}\n")
            continue
        where = data.get("url") or data.get("storage")
        backend = data.get("backend")
        head = f"{name}:{' ' * (9 - len(name))}{where}"
        out.write(head + (f" ({backend})" if backend else "") + "\n")
        out.write(f"  server version: {data.get('server_version') or '-'}\n")
        if name == "store":
            version = data.get("schema_version") or "- (no tables: run keystile db init)"
            out.write(f"  schema version: {version}\n")
        out.write(f"  latency:        {data['latency_ms']} ms\n")
        counts = data.get("counts")
        if counts:
            shown = ", ".join(f"{n} {label}" for label, n in counts.items() if n is not None)
            out.write(f"  rows:           {shown}\n")
    return status
