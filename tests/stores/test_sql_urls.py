"""A store URL reaches its driver whole: keystile adds its settings, never drops the user's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from keystile import Keystile
from keystile.stores.sql import SQLKeyStore, driver_url, keys_table, metadata
from tests.conftest import MYSQL_URL, PEPPER, POSTGRES_URL


@pytest.fixture
def app_schema() -> Iterator[sa.Engine]:
    """Schema ``app`` in the test database, and no keystile tables in ``public``."""
    admin = sa.create_engine(driver_url(POSTGRES_URL, use_async=False))
    with admin.begin() as conn:
        metadata.drop_all(conn)
        conn.execute(sa.text("DROP SCHEMA IF EXISTS app CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA app"))
    yield admin
    with admin.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA app CASCADE"))
    admin.dispose()


def _sql_store(ks: Keystile) -> SQLKeyStore:
    store = ks.store
    assert isinstance(store, SQLKeyStore)
    return store


@pytest.mark.postgres
def test_a_postgres_search_path_in_the_url_puts_the_tables_in_that_schema(
    app_schema: sa.Engine,
) -> None:
    url = f"{POSTGRES_URL}?options=-csearch_path%3Dapp"
    with Keystile({"store": url, "store_timeout": "1500ms"}, pepper=PEPPER) as ks:
        key = ks.keys.create(name="in app", scopes=["read"])
        assert ks.keys.get(key.id).name == "in app"
        with _sql_store(ks).engine.connect() as conn:
            # keystile's own setting is added to the user's, not put in its place
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "1500ms"
            assert conn.execute(sa.text("SHOW search_path")).scalar() == "app"
    with app_schema.connect() as conn:
        schemas = conn.execute(
            sa.text("SELECT table_schema FROM information_schema.tables WHERE table_name = :t"),
            {"t": keys_table.name},
        ).scalars()
        assert set(schemas) == {"app"}


@pytest.mark.postgres
def test_a_statement_timeout_in_the_url_wins_over_keystiles() -> None:
    url = f"{POSTGRES_URL}?options=-c%20statement_timeout%3D7000"
    config = {"store": url, "store_timeout": "1s"}
    with Keystile(config, pepper=PEPPER) as ks, _sql_store(ks).engine.connect() as conn:
        assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "7s"


@pytest.mark.mysql
def test_a_mariadb_url_keeps_the_driver_options_keystile_also_sets() -> None:
    with Keystile({"store": f"{MYSQL_URL}?connect_timeout=7"}, pepper=PEPPER) as ks:
        raw: Any = _sql_store(ks).engine.raw_connection()
        try:
            assert raw.driver_connection.connect_timeout == 7
        finally:
            raw.close()
