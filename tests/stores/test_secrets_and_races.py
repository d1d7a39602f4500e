"""No secret at rest or in logs; the database decides races between processes and threads."""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from keystile import KeyConflict, KeyNotFound
from tests.conftest import (
    MYSQL_URL,
    PEPPER,
    POSTGRES_URL,
    _reset_sql,
    make_engine,
    require_service,
)
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


# -- rotating one key twice at once: the old key's row lock decides ------------------------

DATABASES = [
    pytest.param(POSTGRES_URL, marks=pytest.mark.postgres, id="postgres"),
    pytest.param(MYSQL_URL, marks=pytest.mark.mysql, id="mysql"),
]


def _rotate_at_the_barrier(ks: Any, key_id: str, barrier: threading.Barrier) -> str:
    barrier.wait()
    try:
        new: Any = ks.keys.rotate(key_id, grace="1h")
        return f"rotated {new.id}"
    except (KeyConflict, KeyNotFound) as exc:
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("url", DATABASES)
def test_two_threads_rotating_one_key_make_one_successor(url: str) -> None:
    _reset_sql(url)
    engines = [make_engine(url, store_timeout="10s") for _ in range(2)]
    try:
        for _ in range(5):
            old = engines[0].keys.create(name="shared", org="acme")
            barrier = threading.Barrier(2)
            with ThreadPoolExecutor(2) as pool:
                calls = [pool.submit(_rotate_at_the_barrier, ks, old.id, barrier) for ks in engines]
                outcomes = sorted(call.result(timeout=30) for call in calls)
            successors = [k for k in engines[0].keys.list_all("acme") if k.rotated_from == old.id]
            assert len(successors) == 1, outcomes
            refused, won = outcomes
            assert won == f"rotated {successors[0].id}"
            assert refused.startswith(("KeyConflict: ", "KeyNotFound: ")), refused
            if refused.startswith("KeyConflict"):
                assert f"its successor is {successors[0].id};" in refused
    finally:
        for ks in engines:
            ks.close()


def _waiting_on_a_lock(conn: Any) -> int:
    if conn.dialect.name == "postgresql":
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
    else:
        query = (
            "SELECT count(*) FROM information_schema.innodb_trx t "
            "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
            "WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()"
        )
    return int(conn.execute(sa.text(query)).scalar() or 0)


@pytest.mark.parametrize("url", DATABASES)
def test_a_rotation_waiting_for_the_old_keys_lock_sees_the_winners_successor(url: str) -> None:
    """The loser blocks on the row lock, then must see what the winner committed.

    On MariaDB (REPEATABLE READ) this holds only if the successor is read
    after the lock is taken: the transaction's snapshot starts there.
    """
    from keystile import keys as keyfmt
    from keystile.stores._sql_schema import op_rotate
    from keystile.stores.sql import driver_url

    _reset_sql(url)
    ks = make_engine(url, store_timeout="10s")
    raw = sa.create_engine(driver_url(url, use_async=False))
    try:
        old = ks.keys.create(name="shared", org="acme")
        now = ks.now()
        winner = ks.keys.get(old.id).replace(
            id=keyfmt.new_key_id(),
            digest=ks.digest("the winner's secret"),
            created_at=now,
            rotated_from=old.id,
        )
        with ThreadPoolExecutor(1) as pool, raw.connect() as conn, raw.connect() as watcher:
            tx = conn.begin()
            op_rotate(conn, old.id, winner, now + timedelta(hours=1), now)
            loser = pool.submit(_rotate_at_the_barrier, ks, old.id, threading.Barrier(1))
            deadline = time.monotonic() + 5
            while not _waiting_on_a_lock(watcher):
                assert time.monotonic() < deadline, "the second rotation never waited"
                assert not loser.done(), loser.result()
                # MariaDB refreshes innodb_trx only when unread for 0.1 s.
                time.sleep(0.2)
            tx.commit()
            outcome = loser.result(timeout=10)
        assert outcome == (
            f"KeyConflict: key {old.id} was already rotated: its successor is "
            f"{winner.id}; rotate {winner.id} instead"
        )
        assert [k.id for k in ks.keys.list_all("acme")] == [old.id, winner.id]
    finally:
        ks.close()
        raw.dispose()
