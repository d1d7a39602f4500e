"""No secret at rest or in logs; the database decides races between processes."""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from keystile import KeyConflict
from tests.conftest import PEPPER, POSTGRES_URL, _reset_sql, make_engine, require_service
from tests.doors import Door


def _use_and_revoke(ks: Any) -> list[str]:
    door = Door("wsgi", ks)
    secrets = []
    for i in range(3):
        new = ks.keys.create(name=f"k{i}", scopes=["results"], org="acme", user=f"u{i}")
        secrets.append(new.secret)
        assert door("GET", "/x", key=new.secret).status == 200
        assert door("GET", "/x", key=new.secret[:-1] + "0").status in (401, 200)
        rotated = ks.keys.rotate(new.id, grace="1h")
        secrets.append(rotated.secret)
        assert door("GET", "/x", key=rotated.secret).status == 200
        ks.keys.revoke(new.id)
        assert door("GET", "/x", key=new.secret).status == 401
    ks.flush()
    return secrets


def test_no_secret_in_the_sqlite_file_or_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "keys.db"
    caplog.set_level(logging.DEBUG)
    ks = make_engine(f"sqlite:///{db}")
    secrets = _use_and_revoke(ks)
    ks.close()
    raw = db.read_bytes()
    with sqlite3.connect(db) as conn:
        rows = repr(conn.execute("select * from keystile_keys").fetchall())
    assert "keystile_keys" in raw.decode("latin-1")  # the file was read, not empty
    for secret in secrets:
        assert secret.encode() not in raw
        assert secret not in rows
        # Nor the part after the 14-character display prefix.
        assert secret[14:].encode() not in raw
        assert secret not in caplog.text
    assert "key.revoked" in caplog.text  # the log did record the events


@pytest.mark.postgres
def test_no_secret_in_postgres_rows_or_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    import sqlalchemy as sa

    from keystile.stores.sql import driver_url

    require_service("postgres")
    _reset_sql(POSTGRES_URL)
    caplog.set_level(logging.DEBUG)
    ks = make_engine(POSTGRES_URL)
    secrets = _use_and_revoke(ks)
    ks.close()
    engine = sa.create_engine(driver_url(POSTGRES_URL, use_async=False))
    with engine.connect() as conn:
        dump = repr(conn.execute(sa.text("select * from keystile_keys")).fetchall())
    engine.dispose()
    assert dump.count("key_") >= 6
    for secret in secrets:
        assert secret not in dump and secret[14:] not in dump
        assert secret not in caplog.text


def _create_user_key(url: str, barrier: Any, results: Any) -> None:
    from keystile import Keystile

    ks = Keystile({"store": url}, pepper=PEPPER)
    ks.init_store()
    barrier.wait()
    try:
        ks.keys.create(name="mine", org="acme", user="u_race")
        results.put("created")
    except KeyConflict as exc:
        results.put(f"conflict: {exc}")
    except Exception as exc:  # reported, so the test shows what went wrong
        results.put(f"error: {type(exc).__name__}: {exc}")
    finally:
        ks.close()


@pytest.mark.postgres
@pytest.mark.parametrize("rounds", [5])
def test_two_processes_racing_for_one_user_key_one_wins(rounds: int) -> None:
    require_service("postgres")
    ctx = multiprocessing.get_context("spawn")
    for _ in range(rounds):
        _reset_sql(POSTGRES_URL)
        barrier = ctx.Barrier(2)
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_create_user_key, args=(POSTGRES_URL, barrier, results))
            for _ in range(2)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        outcomes = sorted(results.get(timeout=5) for _ in procs)
        assert outcomes[0] == "conflict: user 'u_race' already has an active key in org 'acme'"
        assert outcomes[1] == "created"
