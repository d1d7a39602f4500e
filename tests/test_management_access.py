"""SPEC section 6: how a change to a key must be asked for, through the management API.

On both doors, a POST or PATCH must declare its body as JSON (a form or
``text/plain`` body, or none, is how a cross-site page writes without a
CORS preflight). Every refusal is checked against the engine too: a
refused request must change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keystile import Keystile
from keystile.stores.base import KeyRecord
from tests.conftest import PEPPER
from tests.test_management import CONFIG, Api, assert_error

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
