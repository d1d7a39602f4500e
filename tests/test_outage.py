"""A store or limiter error names its cause, never a password (keystile._outage).

Every fault is real: a port nothing listens on, a host that cannot resolve
(``.invalid`` is reserved for that), a database or role the real server does
not have, a password the real server refuses.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from keystile import Keystile, StoreUnavailable
from keystile._outage import cause_of
from keystile._redact import redact_url
from tests.conftest import MYSQL_URL, PEPPER, POSTGRES_URL
from tests.doors import DOORS, Door

PASSWORD = "hunter2secret"
ROUTES = [{"path": "/api/{rest:path}", "scopes": []}]
UNUSED = "unused port"  # replaced by a port that was free a moment ago (and still is)


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _faulty(base: str, change: dict[str, Any]) -> str:
    if change.get("port") == UNUSED:
        change = {**change, "port": _unused_port()}
    url = make_url(base).set(**{"password": PASSWORD, **change})
    return url.render_as_string(hide_password=False)


def _store_fault(backend: str, change: dict[str, Any], cause: str, name: str) -> Any:
    base = POSTGRES_URL if backend == "postgres" else MYSQL_URL
    mark = pytest.mark.postgres if backend == "postgres" else pytest.mark.mysql
    return pytest.param(base, change, cause, marks=mark, id=f"{backend}-{name}")


STORE_FAULTS = [
    _store_fault("postgres", {"port": UNUSED}, "connection refused", "refused"),
    _store_fault("postgres", {"host": "no-such-host.invalid"}, "unknown host", "dns"),
    _store_fault("postgres", {"database": "no_such_db_xyz"}, "unknown database", "database"),
    # Trust authentication on the test server: the role itself is what fails.
    _store_fault(
        "postgres",
        {"username": "no_such_role"},
        "authentication failed (unknown user)",
        "role",
    ),
    _store_fault("mysql", {"port": UNUSED}, "connection refused", "refused"),
    _store_fault("mysql", {"host": "no-such-host.invalid"}, "unknown host", "dns"),
    # (MariaDB checks the password before the database: none is sent here.)
    _store_fault(
        "mysql", {"database": "no_such_db_xyz", "password": None}, "unknown database", "database"
    ),
    # root has no password on the test server: sending one is refused.
    _store_fault("mysql", {}, "authentication failed", "password"),
]


@pytest.mark.parametrize(("base", "change", "cause"), STORE_FAULTS)
def test_a_store_error_names_its_cause_and_never_the_password(
    base: str, change: dict[str, Any], cause: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = _faulty(base, change)
    ks = Keystile({"store": url, "store_timeout": "3s", "routes": ROUTES}, pepper=PEPPER)
    with ks:
        with pytest.raises(StoreUnavailable) as info:
            ks.keys.get("key_0000")
        message = str(info.value)
        assert message.endswith(f" unavailable: {cause}"), message
        assert redact_url(url) in message  # the URL as every message shows it: no userinfo
        assert PASSWORD not in message
        with caplog.at_level(logging.DEBUG), Door("wsgi", ks) as send:
            reply = send("GET", "/api/x", key=ks.formats["secret"].generate())
        assert reply.status == 503
        assert f"unavailable: {cause}" in caplog.text
        assert PASSWORD not in caplog.text


LIMITER_FAULTS = [
    pytest.param("redis://{auth}127.0.0.1:{unused}/0", "connection refused", id="refused"),
    pytest.param("redis://{auth}no-such-host.invalid:6379/0", "unknown host", id="dns"),
    pytest.param("redis+cluster://{auth}127.0.0.1:{unused}", "connection refused", id="cluster"),
]


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize(("storage", "cause"), LIMITER_FAULTS)
def test_a_limiter_error_names_its_cause_and_never_the_password(
    door: str, storage: str, cause: str, caplog: pytest.LogCaptureFixture
) -> None:
    unused = _unused_port()
    config = {
        "store": "memory://",
        "routes": ROUTES,
        "limits": {"key": "100/minute"},
        "limiter": {"storage": storage.format(auth=f":{PASSWORD}@", unused=unused)},
    }
    with Keystile(config, pepper=PEPPER) as ks:
        secret = ks.keys.create(name="limited").secret
        with caplog.at_level(logging.DEBUG), Door(door, ks) as send:
            reply = send("GET", "/api/x", key=secret)
    assert reply.status == 503
    where = storage.format(auth=":***@", unused=unused)
    assert f"limiter storage {where} unavailable: {cause}" in caplog.text
    assert PASSWORD not in caplog.text


class OperationalError(Exception):
    """Named as the drivers name a failure to reach the server."""


class IntegrityError(Exception):
    """Named as the drivers name a refused statement."""


def test_an_unclassified_connection_error_shows_its_first_line_with_the_password_masked() -> None:
    exc = OperationalError(f"invalid dsn: near 'password={PASSWORD}'\nDETAIL: more")
    assert cause_of(exc, secrets=[None, PASSWORD]) == (
        "OperationalError: invalid dsn: near 'password=***'"
    )


def test_a_password_is_masked_also_as_a_url_spells_it() -> None:
    exc = OperationalError("bad conninfo near 'p%40ss%20word' and 'p@ss word'")
    assert cause_of(exc, secrets=["p%40ss%20word"]) == (
        "OperationalError: bad conninfo near '***' and '***'"
    )


def test_a_statement_error_is_named_by_class_and_code_never_by_the_values_it_quotes() -> None:
    exc = IntegrityError(1062, "Duplicate entry 'the-digest' for key 'digest'")
    assert cause_of(exc) == "IntegrityError 1062"
