"""SPEC section 6: who may change a key through the management API, and how they must ask.

Two guards, on both doors: a POST or PATCH must declare its body as JSON
(a form or ``text/plain`` body, or none, is how a cross-site page writes
without a CORS preflight), and a member who is not an admin may act only on
the keys they created or own (rename, re-scope, revoke and rotate alike).
Every refusal is checked against the engine too: a refused request must
change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from keystile import Keystile
from keystile.stores.base import KeyRecord
from tests.conftest import PEPPER
from tests.test_management import ADMIN, CONFIG, MEMBER, Api, assert_error

OTHER_MEMBER = "u_2:acme:member"
BODY = b'{"name": "changed", "scopes": ["results"]}'


@pytest.fixture
def ks() -> Iterator[Keystile]:
    engine = Keystile(CONFIG, pepper=PEPPER)
    yield engine
    engine.close()


@pytest.fixture(params=["asgi", "wsgi"])
def api(request: pytest.FixtureRequest, ks: Keystile) -> Api:
    return Api(request.param, ks)


def state(ks: Keystile, key_id: str) -> tuple[str, tuple[str, ...], bool]:
    """What a refused request must not change, read back from the engine."""
    record: KeyRecord = ks.keys.get(key_id)
    return record.name, record.scopes, record.is_active(ks.now())


# -- Content-Type: application/json only -------------------------------------------------

NOT_JSON = [
    pytest.param(None, id="no-content-type"),
    pytest.param("", id="empty"),
    pytest.param("text/plain", id="text-plain"),
    pytest.param("text/plain; charset=utf-8", id="text-plain-charset"),
    pytest.param("application/x-www-form-urlencoded", id="form-urlencoded"),
    pytest.param("multipart/form-data; boundary=x", id="multipart"),
    pytest.param("application/json-patch+json", id="json-patch-lookalike"),
    pytest.param("application/merge-patch+json", id="merge-patch-lookalike"),
    pytest.param("application/jsonp", id="jsonp-lookalike"),
    pytest.param("application/json-seq", id="json-seq-lookalike"),
    pytest.param("text/json", id="text-json"),
    pytest.param("application/json, text/plain", id="two-types-joined"),
    pytest.param("application/json text/plain", id="two-types-spaced"),
]

JSON = [
    pytest.param("application/json", id="plain"),
    pytest.param("application/json; charset=utf-8", id="charset"),
    pytest.param("APPLICATION/JSON", id="upper-case"),
    pytest.param("Application/Json ; Charset=UTF-8", id="mixed-case-spaced"),
]


@pytest.mark.parametrize("ctype", NOT_JSON)
def test_a_post_not_declared_as_json_is_415_and_creates_no_key(api: Api, ctype: str | None) -> None:
    answer = api("POST", content=b'{"name": "n"}', content_type=ctype)
    assert_error(answer, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert answer.headers["accept-post"] == "application/json"
    assert api.ks.keys.list("acme") == []


@pytest.mark.parametrize("ctype", NOT_JSON)
def test_a_patch_not_declared_as_json_is_415_and_changes_nothing(
    api: Api, ctype: str | None
) -> None:
    key = api.create(name="keep", scopes=["events:read"])
    answer = api("PATCH", query=f"id={key['id']}", content=BODY, content_type=ctype)
    assert_error(answer, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert answer.headers["accept-patch"] == "application/json"
    assert state(api.ks, key["id"]) == ("keep", ("events:read",), True)


def test_a_post_with_neither_body_nor_content_type_is_415(api: Api) -> None:
    # A bodiless POST is the simplest cross-site request of all; it must be
    # refused for its missing type, whatever a future endpoint reads of it.
    assert_error(api("POST"), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert api.ks.keys.list("acme") == []


@pytest.mark.parametrize("ctype", JSON)
def test_a_post_declared_as_json_creates_the_key(api: Api, ctype: str) -> None:
    answer = api("POST", content=b'{"name": "n"}', content_type=ctype)
    assert answer.status == 201, answer.body
    assert [r.id for r in api.ks.keys.list("acme")] == [answer.data["id"]]


@pytest.mark.parametrize("ctype", JSON)
def test_a_patch_declared_as_json_changes_the_key(api: Api, ctype: str) -> None:
    key = api.create(name="keep", scopes=["events:read"])
    answer = api("PATCH", query=f"id={key['id']}", content=BODY, content_type=ctype)
    assert answer.status == 200, answer.body
    assert state(api.ks, key["id"]) == ("changed", ("results",), True)


# -- ownership: a non-admin acts only on keys they created or own ------------------------

CHANGES = [
    pytest.param("PATCH", {"name": "mine now"}, id="rename"),
    pytest.param("PATCH", {"scopes": ["results"]}, id="re-scope"),
    pytest.param("DELETE", None, id="revoke"),
    # A rotation ends the old key (at once, with no grace period): a change.
    pytest.param("POST /rotate", {}, id="rotate"),
]


def act(api: Api, method: str, body: Any, key_id: str, session: str) -> Any:
    """``method`` is a method, or a method and the endpoint under the prefix it goes to."""
    method, _, endpoint = method.partition(" ")
    path = api.prefix + endpoint
    return api(method, path=path, session=session, query=f"id={key_id}", json=body)


def succeeded(method: str) -> int:
    return 201 if method.startswith("POST") else 200  # a rotation makes a key


@pytest.mark.parametrize(("method", "body"), CHANGES)
def test_a_member_cannot_change_an_admins_bot_key(api: Api, method: str, body: Any) -> None:
    key = api.create(session=ADMIN, name="deploy", scopes=["events:read"])
    assert_error(act(api, method, body, key["id"], MEMBER), 403, "FORBIDDEN")
    assert state(api.ks, key["id"]) == ("deploy", ("events:read",), True)


@pytest.mark.parametrize("kind", ["bot", "user"])
@pytest.mark.parametrize(("method", "body"), CHANGES)
def test_a_member_cannot_change_another_members_key(
    api: Api, method: str, body: Any, kind: str
) -> None:
    key = api.create(session=OTHER_MEMBER, name="theirs", scopes=["events:read"], kind=kind)
    assert_error(act(api, method, body, key["id"], MEMBER), 403, "FORBIDDEN")
    assert state(api.ks, key["id"]) == ("theirs", ("events:read",), True)


@pytest.mark.parametrize(("method", "body"), CHANGES)
def test_a_member_cannot_change_a_key_with_no_recorded_creator(
    api: Api, method: str, body: Any
) -> None:
    # Made from Python or the CLI without created_by: nobody's own key.
    key_id = api.ks.keys.create(name="ops", scopes=["events:read"], org="acme").record.id
    assert_error(act(api, method, body, key_id, MEMBER), 403, "FORBIDDEN")
    assert state(api.ks, key_id) == ("ops", ("events:read",), True)


@pytest.mark.parametrize("kind", ["bot", "user"])
@pytest.mark.parametrize(("method", "body"), CHANGES)
def test_a_member_may_change_a_key_they_created(
    api: Api, method: str, body: Any, kind: str
) -> None:
    key = api.create(session=MEMBER, scopes=["events:read"], kind=kind)
    answer = act(api, method, body, key["id"], MEMBER)
    assert answer.status == succeeded(method), answer.body
    assert state(api.ks, key["id"]) != (key["name"], ("events:read",), True)


@pytest.mark.parametrize(("method", "body"), CHANGES)
def test_a_member_may_change_a_user_key_they_own_that_an_admin_made(
    api: Api, method: str, body: Any
) -> None:
    made = api.ks.keys.create(
        name="given", scopes=["events:read"], org="acme", user="u_1", created_by="u_9"
    )
    answer = act(api, method, body, made.record.id, MEMBER)
    assert answer.status == succeeded(method), answer.body
    assert state(api.ks, made.record.id) != ("given", ("events:read",), True)


@pytest.mark.parametrize("maker", [MEMBER, OTHER_MEMBER])
@pytest.mark.parametrize(("method", "body"), CHANGES)
def test_an_admin_may_change_any_members_key(api: Api, method: str, body: Any, maker: str) -> None:
    key = api.create(session=maker, scopes=["events:read"], kind="user")
    answer = act(api, method, body, key["id"], ADMIN)
    assert answer.status == succeeded(method), answer.body
    assert state(api.ks, key["id"]) != (key["name"], ("events:read",), True)


@pytest.mark.parametrize("session", [MEMBER, ADMIN])
@pytest.mark.parametrize(("method", "body"), CHANGES)
def test_another_orgs_key_stays_404_for_members_and_admins(
    api: Api, method: str, body: Any, session: str
) -> None:
    key = api.create(session="u_1:globex:member", name="theirs", scopes=["events:read"])
    assert_error(act(api, method, body, key["id"], session), 404, "NOT_FOUND")
    assert state(api.ks, key["id"]) == ("theirs", ("events:read",), True)
