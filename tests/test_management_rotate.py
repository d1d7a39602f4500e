"""SPEC section 6: one key by id, and rotation, through the ASGI and WSGI doors alike.

Every refusal is checked against the engine too: a refused rotation must
leave the org's keys exactly as they were (no successor made, the old key
still active).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from keystile import Keystile
from tests.conftest import PEPPER
from tests.doors import DOORS, Door
from tests.test_management import (
    ADMIN,
    CONFIG,
    LISTED,
    MEMBER,
    PREFIX,
    Api,
    assert_error,
)

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc)
ROTATE = PREFIX + "/rotate"
SAVE_NOW = "Save this API key now — it won't be shown again."


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ks(clock: Clock) -> Iterator[Keystile]:
    engine = Keystile(CONFIG, pepper=PEPPER, clock=clock)
    yield engine
    engine.close()


@pytest.fixture(params=DOORS)
def api(request: pytest.FixtureRequest, ks: Keystile) -> Api:
    return Api(request.param, ks)


def keys_of(ks: Keystile) -> set[tuple[str, bool]]:
    """Every key of the org, revoked ones too, and whether it is active: what a refusal keeps."""
    return {(r.id, r.is_active(ks.now())) for r in ks.keys.list_all("acme")}


def status_of(ks: Keystile, secret: str) -> int:
    return Door("wsgi", ks)("GET", "/api/v1/events", key=secret).status


# -- GET ?id= ----------------------------------------------------------------------------


def test_get_with_an_id_answers_that_key_alone_as_listed(api: Api) -> None:
    api.create(name="first")
    second = api.create(name="second")
    answer = api("GET", query=f"id={second['id']}")
    assert answer.status == 200 and answer.headers["cache-control"] == "no-store"
    listed = {k["id"]: k for k in api("GET").data}
    assert answer.body == {"data": listed[second["id"]]}
    assert set(answer.data) == LISTED


@pytest.mark.parametrize("which", ["other-org", "unknown", "revoked", "expired"])
def test_get_with_an_id_outside_the_callers_active_keys_is_404(
    api: Api, clock: Clock, which: str
) -> None:
    if which == "other-org":
        target = api.create(session="u_7:globex:admin")["id"]
    elif which == "unknown":
        target = "key_doesnotexist"
    else:
        target = api.create(expiresInDays=1)["id"]
        if which == "revoked":
            api.ks.keys.revoke(target)
        else:
            clock.now = NOW + timedelta(days=2)
    answer = api("GET", session=ADMIN, query=f"id={target}")
    assert_error(answer, 404, "NOT_FOUND")
    assert answer.body["error"] == "API key not found"


@pytest.mark.parametrize("query", ["id=", "id=a&id=b"])
def test_get_with_an_empty_or_repeated_id_is_400(api: Api, query: str) -> None:
    api.create()
    assert_error(api("GET", query=query), 400, "BAD_REQUEST", "id")


# -- POST rotate?id= ------------------------------------------------------------------------


def rotate(api: Api, key_id: str, body: Any = None, **options: Any) -> Any:
    return api("POST", path=ROTATE, query=f"id={key_id}", json=body, **options)


def test_rotate_answers_201_with_the_successor_shown_once(api: Api) -> None:
    old = api.create(name="deploy", scopes=["events:read"])
    answer = rotate(api, old["id"], {})
    assert answer.status == 201, answer.body
    assert answer.headers["cache-control"] == "no-store"
    assert answer.body["message"] == SAVE_NOW
    new = answer.data
    assert set(new) == LISTED | {"apiKey"}
    assert new["id"] != old["id"] and new["apiKey"] != old["apiKey"]
    assert new["apiKey"].startswith(new["keyPrefix"]) and new["apiKey"].endswith(new["last4"])
    kept = ("name", "scopes", "type", "kind", "owner", "expiresAt")
    assert {f: new[f] for f in kept} == {f: old[f] for f in kept}
    assert new["requests30d"] == 0 and new["lastUsedAt"] is None
    # Without a grace period the old key stops at once; the successor works.
    assert (status_of(api.ks, old["apiKey"]), status_of(api.ks, new["apiKey"])) == (401, 200)
    listed = api("GET").data
    assert [k["id"] for k in listed] == [new["id"]] and "apiKey" not in listed[0]
    assert api.ks.keys.get(new["id"]).rotated_from == old["id"]


def test_rotate_with_a_grace_period_keeps_the_old_key_until_it_ends(api: Api, clock: Clock) -> None:
    old = api.create(scopes=["events:read"])
    new = rotate(api, old["id"], {"gracePeriod": "24h"}).data
    listed = {k["id"]: k for k in api("GET").data}
    assert set(listed) == {old["id"], new["id"]}
    assert listed[old["id"]]["expiresAt"] == "2026-12-04T10:00:00Z"
    assert (status_of(api.ks, old["apiKey"]), status_of(api.ks, new["apiKey"])) == (200, 200)
    clock.now = NOW + timedelta(hours=24, seconds=1)
    assert (status_of(api.ks, old["apiKey"]), status_of(api.ks, new["apiKey"])) == (401, 200)


@pytest.mark.parametrize("content", [b"", b"  \n", b"{}", b'{"gracePeriod": null}'])
def test_rotate_takes_no_body_an_empty_object_or_a_null_grace(api: Api, content: bytes) -> None:
    old = api.create()
    answer = api("POST", path=ROTATE, query=f"id={old['id']}", content=content)
    assert answer.status == 201, answer.body
    assert keys_of(api.ks) == {(old["id"], False), (answer.data["id"], True)}


ROTATE_BAD = [
    pytest.param("id={id}", {"gracePeriod": "tomorrow"}, "gracePeriod", id="grace-not-a-duration"),
    pytest.param("id={id}", {"gracePeriod": ""}, "gracePeriod", id="grace-empty"),
    pytest.param("id={id}", {"gracePeriod": "-1h"}, "gracePeriod", id="grace-negative"),
    pytest.param("id={id}", {"gracePeriod": "400d"}, "gracePeriod", id="grace-over-365d"),
    pytest.param("id={id}", {"gracePeriod": 86400}, "gracePeriod", id="grace-a-number"),
    pytest.param("id={id}", {"gracePeriod": True}, "gracePeriod", id="grace-a-boolean"),
    pytest.param("id={id}", {"gracePeriod": ["24h"]}, "gracePeriod", id="grace-a-list"),
    pytest.param("id={id}", {"grace": "24h"}, "grace", id="python-spelling"),
    pytest.param("id={id}", {"name": "x"}, "name", id="name-cannot-change"),
    pytest.param("id={id}", [], None, id="array-body"),
    pytest.param("", {}, "id", id="id-missing"),
    pytest.param("id=", {}, "id", id="id-empty"),
    pytest.param("id={id}&id={id}", {}, "id", id="id-repeated"),
]


@pytest.mark.parametrize(("query", "body", "field"), ROTATE_BAD)
def test_rotate_refuses_bad_input_naming_the_field_and_changes_nothing(
    api: Api, query: str, body: Any, field: str | None
) -> None:
    old = api.create()
    answer = api("POST", path=ROTATE, query=query.format(id=old["id"]), json=body)
    assert_error(answer, 400, "BAD_REQUEST", field)
    assert keys_of(api.ks) == {(old["id"], True)}


def test_a_bad_grace_period_is_not_echoed_at_length(api: Api) -> None:
    old = api.create()
    answer = rotate(api, old["id"], {"gracePeriod": "x" * 5000})
    assert_error(answer, 400, "BAD_REQUEST", "gracePeriod")
    assert len(json.dumps(answer.body)) < 300


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_rotate_not_declared_as_json_is_415_and_changes_nothing(
    api: Api, ctype: str | None
) -> None:
    old = api.create()
    answer = api("POST", path=ROTATE, query=f"id={old['id']}", content=b"{}", content_type=ctype)
    assert_error(answer, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert answer.headers["accept-post"] == "application/json"
    assert keys_of(api.ks) == {(old["id"], True)}


@pytest.mark.parametrize("which", ["other-org", "unknown", "revoked"])
@pytest.mark.parametrize("session", [MEMBER, ADMIN])
def test_rotating_a_key_outside_the_callers_active_keys_is_404(
    api: Api, which: str, session: str
) -> None:
    theirs = api.create(session="u_7:globex:admin")
    mine = api.create(session=session)
    api.ks.keys.revoke(mine["id"])
    target = {"other-org": theirs["id"], "unknown": "key_nope", "revoked": mine["id"]}[which]
    before = keys_of(api.ks), api.ks.keys.list_all("globex")
    answer = rotate(api, target, {}, session=session)
    assert_error(answer, 404, "NOT_FOUND")
    assert answer.body["error"] == "API key not found"
    assert (keys_of(api.ks), api.ks.keys.list_all("globex")) == before


def test_a_rotated_user_key_keeps_its_owner_and_its_slot(api: Api) -> None:
    old = api.create(kind="user")
    new = rotate(api, old["id"], {"gracePeriod": "1h"}).data
    assert (new["kind"], new["owner"]) == ("user", "u_1")
    # The successor holds the one personal key of (user, org) now.
    assert_error(api("POST", json={"name": "again", "kind": "user"}), 409, "CONFLICT")


@pytest.mark.parametrize("kind", ["bot", "user"])
def test_rotating_a_key_in_its_grace_again_is_409_naming_its_successor(api: Api, kind: str) -> None:
    old = api.create(kind=kind)
    first = rotate(api, old["id"], {"gracePeriod": "24h"}).data
    listed, kept = api("GET").data, keys_of(api.ks)
    answer = rotate(api, old["id"], {"gracePeriod": "1h"})
    assert_error(answer, 409, "CONFLICT")
    assert answer.body["error"] == (
        f"key {old['id']} was already rotated: its successor is {first['id']}; "
        f"rotate {first['id']} instead"
    )
    text = json.dumps(answer.body)
    assert old["apiKey"] not in text and first["apiKey"] not in text
    # No key made, and the old key's grace is what the first rotation set.
    assert (api("GET").data, keys_of(api.ks)) == (listed, kept)
    # The successor is the key to rotate; a personal key's 409 keeps its own message.
    assert rotate(api, first["id"], {}).status == 201
    if kind == "user":
        refused = api("POST", json={"name": "again", "kind": "user"})
        assert_error(refused, 409, "CONFLICT")
        assert "personal API key" in refused.body["error"]


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE", "PUT"])
def test_rotate_takes_post_only(api: Api, method: str) -> None:
    old = api.create()
    answer = api(method, path=ROTATE, query=f"id={old['id']}", json={})
    assert_error(answer, 405, "METHOD_NOT_ALLOWED")
    assert answer.headers["allow"] == "POST"
    assert keys_of(api.ks) == {(old["id"], True)}


def test_the_successors_secret_never_reaches_the_logs(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    old = api.create()
    with caplog.at_level("DEBUG"):
        new = rotate(api, old["id"], {"gracePeriod": "1h"}).data
    assert new["apiKey"] not in caplog.text and new["id"] in caplog.text
