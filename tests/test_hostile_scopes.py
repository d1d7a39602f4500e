"""A key type's ``max_scopes`` ceiling (SPEC section 3), against every way round it.

The ceiling bounds the key's *effective* grant (its scopes plus all that
``implies`` adds, wildcards included) wherever scopes are set: create and
update, from Python, the CLI and the management API. A row already past it
(written before the check) still gets no more than the ceiling on a request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keystile import KeyInputError, Keystile
from keystile import keys as keyfmt
from keystile.scopes import ScopePolicy
from keystile.stores.base import KeyRecord
from tests.conftest import PEPPER
from tests.doors import DOORS, Door
from tests.test_cli import run
from tests.test_management import ADMIN, MEMBER, Api

ORIGIN = [("Origin", "https://shop.example")]
SCOPES: dict[str, Any] = {
    "implies": {
        "admin": ["*"],
        "events:write": ["events:read"],
        "reports:read": ["reports:export"],  # a read that grants more than a read
        "events:manage": ["events:*"],
        "ops:read": ["servers:delete"],  # shaped like a read, implies a destructive scope
        "stats:read": ["events:read"],  # a read that implies only reads
    },
    "destructive": ["servers:delete", "secrets:read"],
    "known": ["read"],
}
CONFIG: dict[str, Any] = {
    "store": "memory://",
    "scopes": SCOPES,
    "routes": [
        {"path": "/api/v1/events", "methods": ["GET"], "scopes": ["events:read"]},
        {"path": "/api/v1/events/{id}", "methods": ["PUT"], "scopes": ["events:write"]},
        {"path": "/api/v1/reports", "methods": ["GET"], "scopes": ["reports:read"]},
        {"path": "/api/v1/reports/export", "methods": ["GET"], "scopes": ["reports:export"]},
        {"path": "/api/v1/secrets", "methods": ["GET"], "scopes": ["secrets:read"]},
        {"path": "/api/v1/servers/{id}", "methods": ["DELETE"], "scopes": ["servers:delete"]},
    ],
    "default": "deny",
}

# Scopes a publishable key (ceiling `*:read`) must not get, one trick each.
PAST_THE_CEILING = [
    pytest.param(["events:write"], id="write-scope"),
    pytest.param(["*"], id="wildcard"),
    pytest.param(["events:*"], id="resource-wildcard"),
    pytest.param(["*:write"], id="other-action-wildcard"),
    pytest.param(["servers:delete"], id="destructive"),
    pytest.param(["secrets:read"], id="destructive-shaped-like-a-read"),
    pytest.param(["admin"], id="bare-word-implying-wildcard"),
    pytest.param(["read"], id="bare-word"),
    pytest.param(["reports:read"], id="read-implying-another-action"),
    pytest.param(["events:manage"], id="implies-a-resource-wildcard"),
    pytest.param(["ops:read"], id="read-implying-destructive"),
    pytest.param(["events:read", "events:write"], id="hidden-behind-an-allowed-scope"),
]
WITHIN_THE_CEILING = [
    pytest.param(["events:read"], id="concrete-read"),
    pytest.param(["*:read"], id="the-ceiling-itself"),
    pytest.param(["stats:read"], id="read-implying-reads-only"),
    pytest.param(["events:read", "*:read"], id="read-and-the-ceiling"),
]


@pytest.fixture
def ks() -> Iterator[Keystile]:
    engine = Keystile(CONFIG, pepper=PEPPER)
    yield engine
    engine.close()


def publishable(ks: Keystile, scopes: list[str], **options: Any) -> KeyRecord:
    new = ks.keys.create(
        name="widget",
        type="publishable",
        scopes=scopes,
        org="acme",
        allowed_origins=["shop.example"],
        **options,
    )
    return new.record


# -- Python: create and update --------------------------------------------------------------


@pytest.mark.parametrize("scopes", PAST_THE_CEILING)
def test_create_refuses_scopes_past_the_ceiling(ks: Keystile, scopes: list[str]) -> None:
    with pytest.raises(KeyInputError) as info:
        publishable(ks, scopes)
    assert info.value.field == "scopes"
    assert "*:read" in str(info.value) and scopes[-1] in str(info.value)
    assert ks.keys.list(org="acme") == []


@pytest.mark.parametrize("scopes", PAST_THE_CEILING)
def test_update_refuses_scopes_past_the_ceiling_and_changes_nothing(
    ks: Keystile, scopes: list[str]
) -> None:
    key = publishable(ks, ["events:read"])
    with pytest.raises(KeyInputError) as info:
        ks.keys.update(key.id, scopes=scopes, name="renamed")
    assert info.value.field == "scopes"
    assert ks.keys.get(key.id) == key


def test_the_refusal_names_what_an_implied_scope_grants(ks: Keystile) -> None:
    with pytest.raises(KeyInputError, match=r"reports:read \(which grants reports:export\)"):
        publishable(ks, ["reports:read"])


@pytest.mark.parametrize("scopes", WITHIN_THE_CEILING)
def test_scopes_within_the_ceiling_are_accepted(ks: Keystile, scopes: list[str]) -> None:
    key = publishable(ks, ["events:read"])
    assert ks.keys.update(key.id, scopes=scopes).scopes == tuple(scopes)
    assert publishable(ks, scopes).scopes == tuple(scopes)


def test_an_update_that_leaves_scopes_alone_is_not_checked(ks: Keystile) -> None:
    old = insert_past_the_ceiling(ks, ["events:write"])[0]
    assert ks.keys.update(old.id, name="renamed").name == "renamed"


# -- the CLI ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scopes",
    [
        pytest.param(["events:write"], id="write-scope"),
        pytest.param(["*"], id="wildcard"),
        pytest.param(["reports:read"], id="read-implying-another-action"),
    ],
)
def test_cli_update_refuses_scopes_past_the_ceiling(tmp_path: Path, scopes: list[str]) -> None:
    config = tmp_path / "keystile.yaml"
    config.write_text(json.dumps({**CONFIG, "store": f"sqlite:///{tmp_path / 'keys.db'}"}))
    with Keystile(config, pepper=PEPPER) as ks:
        key = publishable(ks, ["events:read"])
    flags = [arg for scope in scopes for arg in ("--scope", scope)]
    done = run(tmp_path, "keys", "update", key.id, *flags)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("keystile: error: argument --scope: publishable keys")
    assert scopes[0] in done.stderr and done.stdout == ""
    with Keystile(config, pepper=PEPPER) as ks:
        assert ks.keys.get(key.id).scopes == ("events:read",)


# -- the management API ------------------------------------------------------------------------


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize(
    ("scopes", "session"),
    [
        pytest.param(["events:write"], MEMBER, id="member-write-scope"),
        pytest.param(["reports:read"], MEMBER, id="member-read-implying-another-action"),
        pytest.param(["*"], ADMIN, id="admin-wildcard"),
        pytest.param(["events:*"], ADMIN, id="admin-resource-wildcard"),
        pytest.param(["admin"], ADMIN, id="admin-bare-word-implying-wildcard"),
        pytest.param(["servers:delete"], ADMIN, id="admin-destructive"),
    ],
)
def test_patch_refuses_scopes_past_the_ceiling(
    ks: Keystile, door: str, scopes: list[str], session: str
) -> None:
    key = publishable(ks, ["events:read"], created_by="u_1")
    api = Api(door, ks)
    answer = api("PATCH", session=session, query=f"id={key.id}", json={"scopes": scopes})
    assert answer.status == 400, answer.body
    assert answer.body["field"] == "scopes" and "*:read" in answer.body["error"]
    assert ks.keys.get(key.id) == key
    shown = api("GET", session=session, query=f"id={key.id}")
    listed = shown.data if isinstance(shown.data, list) else [shown.data]
    assert [k["scopes"] for k in listed if k["id"] == key.id] == [["events:read"]]


# -- a request with a row already past the ceiling -----------------------------------------------


def insert_past_the_ceiling(ks: Keystile, scopes: list[str]) -> tuple[KeyRecord, str]:
    """A publishable key written as an old release (or a hand edit) could have."""
    secret = ks.formats["publishable"].generate()
    record = KeyRecord(
        id=keyfmt.new_key_id(),
        digest=ks.digest(secret),
        prefix=keyfmt.display_prefix(secret),
        last4=keyfmt.last4(secret),
        name="old widget",
        scopes=tuple(scopes),
        org="acme",
        owner=None,
        kind="bot",
        type="publishable",
        allowed_origins=("shop.example",),
        created_at=ks.now(),
    )
    ks.store.execute("insert", record, record.created_at)
    return record, secret


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize(
    ("scopes", "method", "path", "status"),
    [
        pytest.param(["reports:read"], "GET", "/api/v1/reports/export", 403, id="implied-export"),
        pytest.param(["reports:read"], "GET", "/api/v1/reports", 200, id="implied-keeps-the-read"),
        pytest.param(["events:write"], "PUT", "/api/v1/events/1", 403, id="write-scope"),
        pytest.param(["events:write"], "GET", "/api/v1/events", 200, id="write-keeps-its-read"),
        pytest.param(["*"], "PUT", "/api/v1/events/1", 403, id="wildcard-write"),
        pytest.param(["*"], "GET", "/api/v1/events", 200, id="wildcard-keeps-reads"),
        pytest.param(["*"], "GET", "/api/v1/secrets", 403, id="wildcard-destructive-read"),
        pytest.param(["admin"], "DELETE", "/api/v1/servers/1", 403, id="admin-destructive"),
        pytest.param(["events:*"], "PUT", "/api/v1/events/1", 403, id="resource-wildcard"),
        pytest.param(["ops:read"], "DELETE", "/api/v1/servers/1", 403, id="read-implying-delete"),
    ],
)
def test_a_key_already_past_the_ceiling_gets_no_more_than_it(
    ks: Keystile, door: str, scopes: list[str], method: str, path: str, status: int
) -> None:
    _, secret = insert_past_the_ceiling(ks, scopes)
    with Door(door, ks) as send:
        reply = send(method, path, ORIGIN, key=secret)
    assert reply.status == status, reply.body
    if status == 403:
        assert reply.json["code"] == "INSUFFICIENT_SCOPE"


def test_the_app_sees_only_the_scopes_the_ceiling_lets_through(ks: Keystile) -> None:
    record, _ = insert_past_the_ceiling(ks, ["events:read", "events:write", "*", "reports:read"])
    principal = ks.key_context(record).principal
    assert principal.scopes == ("events:read", "reports:read")
    assert principal.has_scopes("events:read", "reports:read", "members:read")
    assert principal.missing_scopes("events:write", "reports:export") == (
        "events:write",
        "reports:export",
    )


# -- the algebra underneath, as properties ----------------------------------------------------

POLICY = ScopePolicy(implies=SCOPES["implies"], destructive=SCOPES["destructive"])
GRANTABLE = [
    *("*", "*:read", "*:write", "events:*", "reports:*", "servers:*"),
    *("events:read", "events:write", "reports:read", "reports:export", "secrets:read"),
    *("servers:delete", "admin", "read", "events:manage", "ops:read", "stats:read"),
]
# Concrete scopes, some named nowhere in the config (a pattern grants those too).
REQUIRED = [s for s in GRANTABLE if "*" not in s] + ["unseen:read", "events:unseen", "unseen"]


@given(
    held=st.lists(st.sampled_from(GRANTABLE), max_size=4),
    ceiling=st.lists(st.sampled_from(GRANTABLE), min_size=1, max_size=3),
)
def test_clamp_grants_exactly_what_both_grant(held: list[str], ceiling: list[str]) -> None:
    closure, bound = POLICY.expand(held), POLICY.expand(ceiling)
    clamped = POLICY.clamp(closure, ceiling)
    for required in REQUIRED:
        both = POLICY.grants(closure, required) and POLICY.grants(bound, required)
        assert POLICY.grants(clamped, required) == both, required


@given(
    held=st.lists(st.sampled_from(GRANTABLE), max_size=4),
    ceiling=st.lists(st.sampled_from(GRANTABLE), min_size=1, max_size=3),
)
def test_scopes_within_the_ceiling_never_grant_past_it(held: list[str], ceiling: list[str]) -> None:
    closure, bound = POLICY.expand(held), POLICY.expand(ceiling)
    if POLICY.over_ceiling(held, ceiling):
        return
    assert POLICY.clamp(closure, ceiling) is closure
    for required in REQUIRED:
        assert not POLICY.grants(closure, required) or POLICY.grants(bound, required), required
