"""SPEC sections 3 and 10: a key bound to at most 100 CIDRs.

Requests from any other client address (read as section 4 step 4 reads it:
trusted proxies only) get 403; both doors; every store keeps the list, and
a store made by an older keystile gains the column in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from keystile import KeyInputError, Keystile
from tests.conftest import PEPPER
from tests.doors import DOORS, Door


@pytest.fixture(params=DOORS)
def door_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ks() -> Iterator[Keystile]:
    engine = Keystile(
        {"store": "memory://", "default": "authenticated", "trusted_proxies": ["10.9.0.0/16"]},
        pepper=PEPPER,
    )
    yield engine
    engine.close()


# (peer, X-Forwarded-For or None, admitted) for a key bound to
# 203.0.113.0/24 and 2001:db8:1::/48.
CASES = [
    pytest.param("203.0.113.7", None, True, id="ipv4-inside"),
    pytest.param("203.0.114.7", None, False, id="ipv4-outside"),
    pytest.param("2001:db8:1:ffff::1", None, True, id="ipv6-inside"),
    pytest.param("2001:db8:2::1", None, False, id="ipv6-outside"),
    pytest.param("::ffff:203.0.113.9", None, True, id="ipv4-mapped-inside"),
    pytest.param("10.9.0.1", "203.0.113.7", True, id="through-a-trusted-proxy"),
    pytest.param("10.9.0.1", "198.51.100.1, 203.0.113.7", True, id="rightmost-untrusted-hop"),
    pytest.param("10.9.0.1", "203.0.113.7, 198.51.100.1", False, id="forged-leftmost-hop"),
    pytest.param("198.51.100.1", "203.0.113.7", False, id="untrusted-peer-cannot-claim"),
    pytest.param("10.9.0.1", None, False, id="the-proxy-itself"),
    pytest.param(None, None, False, id="unix-socket-no-address"),
    pytest.param("testclient", None, False, id="a-name-is-no-address"),
]


@pytest.mark.parametrize(("peer", "forwarded", "admitted"), CASES)
def test_a_key_answers_only_from_its_allowed_addresses(
    ks: Keystile, door_kind: str, peer: str | None, forwarded: str | None, admitted: bool
) -> None:
    key = ks.keys.create(
        name="server", org="acme", allowed_ips=["203.0.113.0/24", "2001:db8:1::/48"]
    )
    headers = [] if forwarded is None else [("X-Forwarded-For", forwarded)]
    with Door(door_kind, ks) as door:
        reply = door("GET", "/api", headers, client=peer, key=key.secret)
    if admitted:
        assert reply.status == 200
    else:
        assert reply.status == 403
        assert reply.json == {
            "error": "API key is not allowed from this address",
            "code": "FORBIDDEN",
            "status": 403,
        }


def test_a_key_without_a_list_answers_from_anywhere(ks: Keystile, door_kind: str) -> None:
    key = ks.keys.create(name="any", org="acme")
    with Door(door_kind, ks) as door:
        for peer in ("203.0.113.7", "2001:db8::1", None):
            assert door("GET", "/api", client=peer, key=key.secret).status == 200


def test_a_change_to_the_list_applies_at_once(ks: Keystile, door_kind: str) -> None:
    key = ks.keys.create(name="server", org="acme", allowed_ips=["203.0.113.0/24"])
    with Door(door_kind, ks) as door:
        assert door("GET", "/api", client="198.51.100.1", key=key.secret).status == 403
        ks.keys.update(key.id, allowed_ips=["198.51.100.0/24"])
        assert door("GET", "/api", client="198.51.100.1", key=key.secret).status == 200
        assert door("GET", "/api", client="203.0.113.7", key=key.secret).status == 403
        ks.keys.update(key.id, allowed_ips=[])  # cleared: any address
        assert door("GET", "/api", client="203.0.113.7", key=key.secret).status == 200
    assert ks.keys.get(key.id).allowed_ips == ()


@pytest.mark.parametrize(
    ("value", "named"),
    [
        pytest.param(["203.0.113.0/33"], "203.0.113.0/33", id="prefix-too-long"),
        pytest.param(["10.0.0.7/8"], "10.0.0.7/8", id="host-bits-set"),
        pytest.param(["not-an-ip"], "not-an-ip", id="not-an-address"),
        pytest.param(["2001:db8::/129"], "2001:db8::/129", id="ipv6-prefix-too-long"),
        pytest.param([42], "42", id="not-a-string"),
        pytest.param("203.0.113.0/24", None, id="a-string-not-a-list"),
        pytest.param([f"10.0.{i}.0/24" for i in range(101)], "at most 100", id="over-100"),
    ],
)
def test_a_bad_list_is_refused_naming_the_value_and_changes_nothing(
    ks: Keystile, value: Any, named: str | None
) -> None:
    with pytest.raises(KeyInputError) as made:
        ks.keys.create(name="bad", org="acme", allowed_ips=value)
    assert made.value.field == "allowed_ips"
    if named is not None:
        assert named in str(made.value)
    assert ks.keys.list(org="acme") == []
    key = ks.keys.create(name="good", org="acme", allowed_ips=["203.0.113.0/24"])
    with pytest.raises(KeyInputError):
        ks.keys.update(key.id, allowed_ips=value)
    assert ks.keys.get(key.id).allowed_ips == ("203.0.113.0/24",)


def test_addresses_are_kept_normalized_and_once(ks: Keystile) -> None:
    key = ks.keys.create(
        name="k",
        org="acme",
        allowed_ips=["203.0.113.5", "2001:DB8::/32", "203.0.113.5/32", " 198.51.100.0/24 "],
    )
    assert key.allowed_ips == ("203.0.113.5/32", "2001:db8::/32", "198.51.100.0/24")
    exactly_100 = [f"10.0.{i}.0/24" for i in range(100)]
    assert len(ks.keys.update(key.id, allowed_ips=exactly_100).allowed_ips) == 100


def test_every_store_keeps_the_list_and_rotation_carries_it(store_url: str) -> None:
    with Keystile({"store": store_url}, pepper=PEPPER) as ks:
        key = ks.keys.create(name="k", org="acme", allowed_ips=["203.0.113.0/24", "2001:db8::/32"])
        assert ks.keys.get(key.id).allowed_ips == ("203.0.113.0/24", "2001:db8::/32")
        successor = ks.keys.rotate(key.id)
        assert ks.keys.get(successor.id).allowed_ips == ("203.0.113.0/24", "2001:db8::/32")


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
        pytest.param("mysql", marks=pytest.mark.mysql, id="mysql"),
    ],
)
def test_a_store_made_before_allowlists_gains_the_column_in_place(
    backend: str, tmp_path: Any
) -> None:
    from keystile.stores.sql import driver_url
    from tests.conftest import store_url_for

    url = store_url_for(backend, tmp_path)
    with Keystile({"store": url}, pepper=PEPPER) as ks:
        old = ks.keys.create(name="old", org="acme")
    # What a version-2 store looks like: no allowed_ips column.
    engine = sa.create_engine(driver_url(url, use_async=False))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE keystile_keys DROP COLUMN allowed_ips"))
            conn.execute(sa.text("DELETE FROM keystile_schema WHERE version > 2"))
            conn.execute(sa.text("DELETE FROM keystile_schema WHERE version < 2"))
            if not conn.execute(sa.text("SELECT count(*) FROM keystile_schema")).scalar():
                conn.execute(
                    sa.text(
                        "INSERT INTO keystile_schema (version, applied_at) "
                        "VALUES (2, CURRENT_TIMESTAMP)"
                    )
                )
    finally:
        engine.dispose()
    with Keystile({"store": url}, pepper=PEPPER) as ks:
        assert ks.keys.get(old.id).allowed_ips == ()  # the old row reads as no list
        new = ks.keys.create(name="new", org="acme", allowed_ips=["203.0.113.0/24"])
        assert ks.keys.get(new.id).allowed_ips == ("203.0.113.0/24",)
    engine = sa.create_engine(driver_url(url, use_async=False))
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT max(version) FROM keystile_schema")).scalar()
    finally:
        engine.dispose()
    assert versions == 3


# -- over the management API: allowedIps ----------------------------------------------


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_the_management_api_sets_shows_and_clears_allowed_ips(kind: str) -> None:
    from tests.test_management import CONFIG, Api, assert_error

    with Keystile(CONFIG, pepper=PEPPER) as engine:
        api = Api(kind, engine)
        made = api.create(allowedIps=["203.0.113.0/24", "2001:db8::1"])
        assert made["allowedIps"] == ["203.0.113.0/24", "2001:db8::1/128"]
        assert engine.keys.get(made["id"]).allowed_ips == ("203.0.113.0/24", "2001:db8::1/128")
        patched = api("PATCH", query=f"id={made['id']}", json={"allowedIps": ["198.51.100.0/24"]})
        assert patched.status == 200 and patched.data["allowedIps"] == ["198.51.100.0/24"]
        got = api("GET", query=f"id={made['id']}")
        assert got.data["allowedIps"] == ["198.51.100.0/24"]
        for bad in (["10.0.0.7/8"], "203.0.113.0/24", [f"10.0.{i}.0/24" for i in range(101)]):
            refused = api("PATCH", query=f"id={made['id']}", json={"allowedIps": bad})
            assert_error(refused, 400, "BAD_REQUEST", "allowedIps")
            assert engine.keys.get(made["id"]).allowed_ips == ("198.51.100.0/24",)
        refused = api("POST", json={"name": "bad", "allowedIps": ["nope"]})
        assert_error(refused, 400, "BAD_REQUEST", "allowedIps")
        assert "nope" in refused.body["error"]
        assert [k["id"] for k in api("GET").data] == [made["id"]]  # nothing was created
        cleared = api("PATCH", query=f"id={made['id']}", json={"allowedIps": []})
        assert cleared.data["allowedIps"] == []
