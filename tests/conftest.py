"""Shared fixtures: the table of backends every store and limiter test runs on.

Each real service has a marker. When ``KEYSTILE_REQUIRE_SERVICES=1`` (as
``.ci/run`` sets) a test whose service does not answer fails; otherwise it
is skipped with the reason.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The three-node Redis Cluster fixture, shared by every module that needs one.
from tests.redis_cluster import cluster  # noqa: F401
from tests.tcp_proxy import TcpProxy

REQUIRE_SERVICES = os.environ.get("KEYSTILE_REQUIRE_SERVICES") == "1"
PEPPER = b"test-pepper-0123456789abcdef0123"

POSTGRES_URL = os.environ.get(
    "KEYSTILE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("KEYSTILE_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("KEYSTILE_TEST_REDIS", "redis://127.0.0.1:6379/0")

_SERVICES = {
    "postgres": ("127.0.0.1", 5432),
    "mysql": ("127.0.0.1", 3306),
    "redis": ("127.0.0.1", 6379),
}


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str) -> None:
    """Fail (under KEYSTILE_REQUIRE_SERVICES=1) or skip when a service is down."""
    host, port = _SERVICES[name]
    if _answers(host, port):
        return
    message = f"{name} does not answer on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " and KEYSTILE_REQUIRE_SERVICES=1")
    pytest.skip(message)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in _SERVICES:
            if item.get_closest_marker(name) is not None:
                item.add_marker(pytest.mark.usefixtures(f"_needs_{name}"))


@pytest.fixture
def _needs_postgres() -> None:
    require_service("postgres")


@pytest.fixture
def _needs_mysql() -> None:
    require_service("mysql")


@pytest.fixture
def _needs_redis() -> None:
    require_service("redis")


# The one table of key-store backends (limits' tests/utils.py does the same).
STORE_BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
    pytest.param("mysql", marks=pytest.mark.mysql, id="mysql"),
]


def _reset_sql(url: str) -> None:
    import sqlalchemy as sa

    from keystile.stores.sql import driver_url, metadata

    engine = sa.create_engine(driver_url(url, use_async=False))
    try:
        with engine.begin() as conn:
            metadata.drop_all(conn)
    finally:
        engine.dispose()


def store_url_for(backend: str, tmp_path: Path) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / ('keys-' + uuid.uuid4().hex[:8] + '.db')}"
    url = POSTGRES_URL if backend == "postgres" else MYSQL_URL
    require_service(backend)
    _reset_sql(url)
    return url


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url_for(request.param, tmp_path)


# The networked databases, for tests that cut them (tests/tcp_proxy.py).
PROXIED_DATABASES = [
    pytest.param(POSTGRES_URL, marks=pytest.mark.postgres, id="postgres"),
    pytest.param(MYSQL_URL, marks=pytest.mark.mysql, id="mysql"),
]


@pytest.fixture(params=PROXIED_DATABASES)
def proxied_url(request: pytest.FixtureRequest) -> Iterator[tuple[str, TcpProxy]]:
    """The database's URL rewritten to go through a proxy of its own, and the proxy.

    The proxy cuts or stalls the real database for outage tests; the
    tables are dropped first.
    """
    from sqlalchemy.engine import make_url

    url: str = request.param
    _reset_sql(url)
    target = make_url(url)
    with TcpProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        through = target.set(host="127.0.0.1", port=proxy.port)
        yield through.render_as_string(hide_password=False), proxy


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_engine(store: str, **config: Any) -> Any:
    from keystile import Keystile

    config.setdefault("default", "authenticated")
    return Keystile({"store": store, **config}, pepper=PEPPER)


@pytest.fixture
def ks(store_url: str) -> Iterator[Any]:
    engine = make_engine(
        store_url,
        limits={"key": None, "plans": {"free": "60/minute", "pro": "600/minute"}},
        scopes={"known": ["events:read", "events:write", "results"]},
        default="authenticated",
    )
    yield engine
    engine.close()


# Property tests: the same examples on every CI run (a red run should mean a
# change broke something, not that the search got lucky); random elsewhere.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
_hypothesis_settings.register_profile("dev", deadline=None)
_hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")
