"""SPEC section 6, the key-management HTTP API, through its ASGI and WSGI doors alike."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from starlette.testclient import TestClient
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client
from werkzeug.wrappers import Request as WerkzeugRequest

from keystile import Keystile
from keystile.management import asgi_app, wsgi_app
from tests.conftest import PEPPER, make_engine
from tests.doors import Door
from tests.tcp_proxy import TcpProxy

PREFIX = "/api/v1/keys"
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
LISTED = {
    *("id", "name", "keyPrefix", "scopes", "rateLimit", "lastUsedAt", "expiresAt", "createdAt"),
    *("type", "kind", "owner", "last4", "allowedIps", "requests30d"),
}
CONFIG: dict[str, Any] = {
    "store": "memory://",
    "scopes": {
        "implies": {"admin": ["*"], "events:write": ["events:read"]},
        "destructive": ["servers:delete"],
        "known": ["events:read", "events:write", "results"],
        "default": ["events:read"],
    },
    "routes": [
        {"path": "/api/v1/events", "methods": ["GET"], "scopes": ["events:read"]},
        {"path": "/api/v1/events/{id}", "methods": ["PUT"], "scopes": ["events:write"]},
        {"path": "/api/v1/servers/{id}", "methods": ["DELETE"], "scopes": ["servers:delete"]},
    ],
    "default": "deny",
}
MEMBER = "u_1:acme:member"
ADMIN = "u_9:acme:admin"


def session_of(header: str | None) -> tuple[str, str, bool] | None:
    """The test host's session: `X-Session: user:org:role` (a cookie in real life)."""
    if not header:
        return None
    user, org, role = header.split(":")
    return user, org, role == "admin"


async def async_authenticate(request: Request) -> tuple[str, str, bool] | None:
    return session_of(request.headers.get("x-session"))


def sync_authenticate(request: WerkzeugRequest | Request) -> tuple[str, str, bool] | None:
    return session_of(request.headers.get("x-session"))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def data(self) -> Any:
        return self.body["data"]


class Api:
    """One door of the management API, called the same way whichever it is."""

    def __init__(self, kind: str, ks: Keystile, app: Any = None, prefix: str = PREFIX) -> None:
        self.kind, self.ks, self.prefix = kind, ks, prefix
        if kind == "asgi":
            self.client: Any = TestClient(app or asgi_app(ks, authenticate=async_authenticate))
        else:
            self.client = Client(app or wsgi_app(ks, authenticate=sync_authenticate))

    def __call__(
        self,
        method: str,
        *,
        session: str | None = MEMBER,
        json: Any = None,
        content: bytes | None = None,
        query: str = "",
        headers: dict[str, str] | None = None,
        path: str | None = None,
        content_type: str | None = "application/json",
    ) -> Answer:
        """One request; ``content`` goes with ``content_type`` (``None``: no such header)."""
        url = (path or self.prefix) + (f"?{query}" if query else "")
        hdrs = dict(headers or {})
        if session:
            hdrs["X-Session"] = session
        if content is not None and content_type is not None:
            hdrs.setdefault("Content-Type", content_type)
        if self.kind == "asgi":
            r = self.client.request(method, url, json=json, content=content, headers=hdrs)
            raw, got = r.content, dict(r.headers)
        else:
            r = self.client.open(url, method=method, json=json, data=content, headers=hdrs)
            raw, got = r.get_data(), dict(r.headers)
        got = {k.lower(): v for k, v in got.items()}
        return Answer(r.status_code, got, json_of(raw))

    def create(self, session: str = MEMBER, **body: Any) -> dict[str, Any]:
        answer = self("POST", session=session, json={"name": "ci", **body})
        assert answer.status == 201, answer.body
        return dict(answer.data)


def json_of(raw: bytes) -> Any:
    return json.loads(raw) if raw else None


def assert_error(answer: Answer, status: int, code: str, field: str | None = None) -> None:
    assert answer.status == status, answer.body
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.body["code"] == code and answer.body["status"] == status
    assert isinstance(answer.body["error"], str) and answer.body["error"]
    assert answer.body.get("field") == field


@pytest.fixture
def ks() -> Iterator[Keystile]:
    engine = Keystile(CONFIG, pepper=PEPPER)
    yield engine
    engine.close()


@pytest.fixture(params=["asgi", "wsgi"])
def api(request: pytest.FixtureRequest, ks: Keystile) -> Api:
    return Api(request.param, ks)


# -- create ------------------------------------------------------------------------


def test_create_answers_201_with_the_secret_once_and_no_store(api: Api) -> None:
    answer = api("POST", json={"name": "CI upload", "scopes": ["results"], "expiresInDays": 30})
    assert answer.status == 201
    assert answer.headers["cache-control"] == "no-store"
    assert answer.body["message"] == "Save this API key now — it won't be shown again."
    data = answer.data
    assert set(data) == LISTED | {"apiKey"}
    assert data["apiKey"].startswith("sk_") and data["apiKey"].startswith(data["keyPrefix"])
    assert data["name"] == "CI upload" and data["scopes"] == ["results"]
    assert ISO_Z.fullmatch(data["createdAt"]) and ISO_Z.fullmatch(data["expiresAt"])
    assert data["lastUsedAt"] is None and data["rateLimit"] is None
    listed = api("GET").data
    assert [k["id"] for k in listed] == [data["id"]] and "apiKey" not in listed[0]


def test_created_key_is_a_bot_key_made_by_the_session_user(api: Api) -> None:
    record = api.ks.keys.get(api.create()["id"])
    owner = (record.kind, record.owner, record.created_by, record.org)
    assert owner == ("bot", None, "u_1", "acme")


def test_scopes_default_to_the_configured_default(api: Api) -> None:
    data = api.create()
    assert data["scopes"] == ["events:read"] and data["expiresAt"] is None


def test_a_second_user_key_for_the_same_user_and_org_is_409(api: Api) -> None:
    record = api.ks.keys.get(api.create(kind="user")["id"])
    assert (record.kind, record.owner) == ("user", "u_1")
    assert_error(api("POST", json={"name": "again", "kind": "user"}), 409, "CONFLICT")
    api.create(kind="user", session="u_2:acme:member")  # another user has a slot of their own


CREATE_BAD = [
    pytest.param({}, "name", id="name-missing"),
    pytest.param({"name": ""}, "name", id="name-empty"),
    pytest.param({"name": "   "}, "name", id="name-blank"),
    pytest.param({"name": "x" * 101}, "name", id="name-over-100"),
    pytest.param({"name": 7}, "name", id="name-not-a-string"),
    pytest.param({"name": "a\nb"}, "name", id="name-control-character"),
    pytest.param({"name": "n", "scopes": "events:read"}, "scopes", id="scopes-a-string"),
    pytest.param({"name": "n", "scopes": None}, "scopes", id="scopes-null"),
    pytest.param({"name": "n", "scopes": []}, "scopes", id="scopes-empty"),
    pytest.param({"name": "n", "scopes": ["nope:read"]}, "scopes", id="scope-unknown"),
    pytest.param({"name": "n", "scopes": ["Events:read"]}, "scopes", id="scope-wrong-case"),
    pytest.param({"name": "n", "scopes": ["events read"]}, "scopes", id="scope-malformed"),
    pytest.param({"name": "n", "scopes": ["events:read\n"]}, "scopes", id="scope-newline"),
    pytest.param({"name": "n", "scopes": [1]}, "scopes", id="scope-not-a-string"),
    pytest.param({"name": "n", "expiresInDays": 0}, "expiresInDays", id="days-zero"),
    pytest.param({"name": "n", "expiresInDays": 366}, "expiresInDays", id="days-over-365"),
    pytest.param({"name": "n", "expiresInDays": -1}, "expiresInDays", id="days-negative"),
    pytest.param({"name": "n", "expiresInDays": 1.5}, "expiresInDays", id="days-fraction"),
    pytest.param({"name": "n", "expiresInDays": "30"}, "expiresInDays", id="days-a-string"),
    pytest.param({"name": "n", "expiresInDays": True}, "expiresInDays", id="days-a-boolean"),
    pytest.param({"name": "n", "kind": "robot"}, "kind", id="kind-unknown"),
    pytest.param({"name": "n", "rateLimit": "1/second"}, "rateLimit", id="unknown-field"),
    pytest.param({"name": "n", "org": "evil"}, "org", id="org-field-refused"),
]


@pytest.mark.parametrize(("body", "field"), CREATE_BAD)
def test_create_refuses_bad_input_naming_the_field(api: Api, body: Any, field: str) -> None:
    assert_error(api("POST", json=body), 400, "BAD_REQUEST", field)
    assert api.ks.keys.list("acme") == []


BAD_BODIES = [
    pytest.param(b"{not json", id="invalid-json"),
    pytest.param(b"", id="empty-body"),
    pytest.param(b'["name"]', id="array"),
    pytest.param(b'"name"', id="string"),
    pytest.param(b"null", id="null"),
    pytest.param(b'{"name": NaN}', id="nan-constant"),
    pytest.param(b'{"name": "a", "name": "b"}', id="duplicate-field"),
    pytest.param(b'{"name": "\xff"}', id="invalid-utf8"),
    pytest.param(b"[" * 50000, id="deeply-nested"),
]


@pytest.mark.parametrize("content", BAD_BODIES)
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_body_that_is_not_one_json_object_is_400(api: Api, method: str, content: bytes) -> None:
    assert_error(api(method, content=content, query="id=key_x"), 400, "BAD_REQUEST")


def test_a_body_over_64_kib_is_413(api: Api) -> None:
    answer = api("POST", json={"name": "n", "pad": "x" * 70000})
    assert_error(answer, 413, "PAYLOAD_TOO_LARGE")


# (Content-Type and who may change which key: test_management_access.py.)

# -- what a caller may grant ------------------------------------------------------------

ADMIN_ONLY = [
    pytest.param("*", id="wildcard"),
    pytest.param("events:*", id="resource-pattern"),
    pytest.param("*:read", id="action-pattern"),
    pytest.param("servers:delete", id="destructive"),
    pytest.param("admin", id="implies-wildcard"),
]


@pytest.mark.parametrize("scope", ADMIN_ONLY)
def test_a_member_cannot_mint_wildcard_or_destructive_scopes(api: Api, scope: str) -> None:
    assert_error(api("POST", json={"name": "n", "scopes": [scope]}), 403, "FORBIDDEN", "scopes")
    assert api.ks.keys.list("acme") == []  # the refused POST made no key
    key = api.create()
    before = api.ks.keys.get(key["id"])
    patched = api("PATCH", query=f"id={key['id']}", json={"scopes": [scope]})
    assert_error(patched, 403, "FORBIDDEN", "scopes")
    assert api.ks.keys.get(key["id"]) == before  # read back: the refused PATCH changed nothing
    assert before.scopes == ("events:read",)


@pytest.mark.parametrize("scope", ADMIN_ONLY)
def test_an_admin_may_mint_them(api: Api, scope: str) -> None:
    assert api.create(session=ADMIN, scopes=[scope])["scopes"] == [scope]


@pytest.mark.parametrize("scope", ["nope:*", "*:fly"])
def test_a_pattern_that_matches_no_known_scope_is_400(api: Api, scope: str) -> None:
    answer = api("POST", session=ADMIN, json={"name": "n", "scopes": [scope]})
    assert_error(answer, 400, "BAD_REQUEST", "scopes")


# -- sessions only ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="nothing"),
        pytest.param({"Authorization": "Bearer {secret}"}, id="bearer-key"),
        pytest.param({"x-api-key": "{secret}"}, id="x-api-key"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE"])
def test_no_session_is_401_whatever_key_it_carries(
    api: Api, method: str, headers: dict[str, str]
) -> None:
    secret = api.ks.keys.create(name="admin", scopes=["*"], org="acme").secret
    sent = {k: v.format(secret=secret) for k, v in headers.items()}
    answer = api(method, session=None, headers=sent, json={"name": "n"}, query="id=x")
    assert_error(answer, 401, "UNAUTHORIZED")
    assert secret not in json.dumps(answer.body)
    assert len(api.ks.keys.list("acme")) == 1


def test_a_malformed_authenticate_answer_fails_closed(ks: Keystile) -> None:
    bad: Callable[[Any], Any] = lambda request: ("u_1", "acme")  # noqa: E731
    with pytest.raises(TypeError, match="authenticate"):
        TestClient(asgi_app(ks, authenticate=bad)).get(PREFIX)
    with pytest.raises(TypeError, match="authenticate"):
        Client(wsgi_app(ks, authenticate=bad)).get(PREFIX)


def test_asgi_accepts_a_sync_authenticate(ks: Keystile) -> None:
    def sync(request: Request) -> tuple[str, str, bool]:
        return ("u_1", "acme", False)

    assert TestClient(asgi_app(ks, authenticate=sync)).get(PREFIX).json() == {"data": []}


# -- list, delete, patch ---------------------------------------------------------------------


def test_list_shows_only_the_callers_org_and_only_active_keys(api: Api) -> None:
    mine, revoked = api.create(name="mine"), api.create(name="gone")
    api.ks.keys.revoke(revoked["id"])
    api.create(name="theirs", session="u_7:globex:admin")
    listed = api("GET").data
    assert [k["name"] for k in listed] == ["mine"]
    assert set(listed[0]) == LISTED and listed[0]["keyPrefix"] == mine["keyPrefix"]


def test_created_key_works_until_deleted(api: Api) -> None:
    key = api.create(scopes=["events:read"])
    door = Door("wsgi", api.ks)
    assert door("GET", "/api/v1/events", key=key["apiKey"]).status == 200
    answer = api("DELETE", query=f"id={key['id']}")
    assert (answer.status, answer.body) == (200, {"message": "API key revoked"})
    assert door("GET", "/api/v1/events", key=key["apiKey"]).status == 401
    assert api("GET").data == []
    assert_error(api("DELETE", query=f"id={key['id']}"), 404, "NOT_FOUND")


def test_patch_of_scopes_takes_effect_at_once(api: Api) -> None:
    key = api.create(scopes=["events:read"])
    door = Door("wsgi", api.ks)
    assert door("PUT", "/api/v1/events/1", key=key["apiKey"]).status == 403
    answer = api("PATCH", query=f"id={key['id']}", json={"scopes": ["events:write"]})
    assert answer.status == 200 and answer.data["scopes"] == ["events:write"]
    assert set(answer.data) == LISTED
    assert door("PUT", "/api/v1/events/1", key=key["apiKey"]).status == 200


def test_patch_of_name_answers_the_key_as_listed(api: Api) -> None:
    key = api.create()
    answer = api("PATCH", query=f"id={key['id']}", json={"name": "renamed"})
    assert answer.data == {**api("GET").data[0], "name": "renamed"}


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_another_orgs_key_is_404_like_an_unknown_one(api: Api, method: str) -> None:
    theirs = api.create(session="u_7:globex:admin")
    for target in (theirs["id"], "key_doesnotexist"):
        answer = api(method, session=ADMIN, query=f"id={target}", json={"name": "x"})
        assert_error(answer, 404, "NOT_FOUND")
        assert answer.body["error"] == "API key not found"
    assert api.ks.keys.get(theirs["id"]).is_active(api.ks.now())


PATCH_BAD = [
    pytest.param("", {"name": "x"}, "id", id="id-missing"),
    pytest.param("id=", {"name": "x"}, "id", id="id-empty"),
    pytest.param("id=a&id=b", {"name": "x"}, "id", id="id-repeated"),
    pytest.param("id={id}", {}, None, id="nothing-to-change"),
    pytest.param("id={id}", {"name": ""}, "name", id="name-empty"),
    pytest.param("id={id}", {"name": "x" * 101}, "name", id="name-over-100"),
    pytest.param("id={id}", {"scopes": ["nope"]}, "scopes", id="scope-unknown"),
    pytest.param("id={id}", {"scopes": []}, "scopes", id="scopes-empty"),
    pytest.param("id={id}", {"expiresInDays": 5}, "expiresInDays", id="days-cannot-change"),
    pytest.param("id={id}", {"kind": "user"}, "kind", id="kind-cannot-change"),
    pytest.param("id={id}", {"bogus": 1}, "bogus", id="unknown-field"),
]


@pytest.mark.parametrize(("query", "body", "field"), PATCH_BAD)
def test_patch_refuses_bad_input_naming_the_field(
    api: Api, query: str, body: Any, field: str | None
) -> None:
    key = api.create(name="keep")
    before = api.ks.keys.get(key["id"])
    assert_error(
        api("PATCH", query=query.format(id=key["id"]), json=body), 400, "BAD_REQUEST", field
    )
    assert api.ks.keys.get(key["id"]) == before  # read back: nothing of it was applied
    assert api("GET").data == [{k: v for k, v in key.items() if k != "apiKey"}]


@pytest.mark.parametrize("query", ["", "id=", "id=a&id=b"])
def test_delete_without_one_id_is_400(api: Api, query: str) -> None:
    assert_error(api("DELETE", query=query), 400, "BAD_REQUEST", "id")


# -- HTTP details ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "OPTIONS", "HEAD"])
def test_other_methods_are_405_with_allow(api: Api, method: str) -> None:
    answer = api(method)
    assert answer.status == 405 and answer.headers["allow"] == "GET, POST, PATCH, DELETE"
    if method != "HEAD":
        assert_error(answer, 405, "METHOD_NOT_ALLOWED")


def test_other_paths_are_404_json_and_a_trailing_slash_is_no_redirect(api: Api) -> None:
    assert_error(api("GET", path="/api/v1/other"), 404, "NOT_FOUND")
    assert api("GET", path=PREFIX + "/").status == 200


def test_errors_problem_switches_refusals_to_rfc_9457(api: Api) -> None:
    engine = Keystile({**CONFIG, "errors": "problem"}, pepper=PEPPER)
    answer = Api(api.kind, engine)("POST", json={"name": ""})
    assert answer.status == 400 and answer.headers["content-type"] == "application/problem+json"
    assert (answer.body["code"], answer.body["field"]) == ("BAD_REQUEST", "name")
    engine.close()


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_store_outage_is_503_with_retry_after(
    kind: str, proxied_url: tuple[str, TcpProxy]
) -> None:
    """A real database, cut under the API (as tests/test_reliability.py cuts it)."""
    url, proxy = proxied_url
    engine = Keystile({**CONFIG, "store": url, "store_timeout": "500ms"}, pepper=PEPPER)
    app: Any
    if kind == "asgi":
        app = asgi_app(engine, authenticate=async_authenticate)
    else:
        app = wsgi_app(engine, authenticate=sync_authenticate)
    try:
        with contextlib.ExitStack() as stack:
            api = Api(kind, engine, app)
            if kind == "asgi":  # one event loop, so one async store, for all requests
                api.client = stack.enter_context(TestClient(app))
                stack.callback(api.client.portal.call, engine.aclose)
            made = api.create()
            proxy.cut()
            for method, body in (("GET", None), ("POST", {"name": "during"})):
                started = time.monotonic()
                answer = api(method, json=body)
                assert_error(answer, 503, "UNAVAILABLE")
                assert answer.headers["retry-after"] == "1"
                assert time.monotonic() - started < 1.0  # store_timeout, plus overhead
                # The store's URL (and any password in it) stays in the logs.
                assert answer.body["error"] == "the key store is unavailable; retry shortly"
            proxy.restore()
            listed = api("GET")  # back by itself, and nothing was half-written
            assert listed.status == 200 and [k["id"] for k in listed.data] == [made["id"]]
    finally:
        engine.close()


def test_the_secret_never_reaches_the_logs(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        key = api.create()
        api("DELETE", query=f"id={key['id']}")
    assert key["apiKey"] not in caplog.text and key["id"] in caplog.text


def test_a_custom_prefix_moves_the_collection(ks: Keystile) -> None:
    asgi = Api("asgi", ks, asgi_app(ks, async_authenticate, prefix="/keys"), prefix="/keys")
    wsgi = Api("wsgi", ks, wsgi_app(ks, sync_authenticate, prefix="/keys"), prefix="/keys")
    for door in (asgi, wsgi):
        assert door("GET").status == 200
        assert door("GET", path=PREFIX).status == 404


@pytest.mark.parametrize("prefix", ["keys", "/keys/{id}", "/a//b", "/keys?x=1"])
def test_a_prefix_that_is_not_a_literal_path_is_refused(ks: Keystile, prefix: str) -> None:
    for factory in (asgi_app, wsgi_app):
        with pytest.raises(ValueError, match="prefix"):
            factory(ks, sync_authenticate, prefix=prefix)


# -- mounting ----------------------------------------------------------------------------------


def test_asgi_app_answers_under_a_starlette_mount(ks: Keystile) -> None:
    host = Starlette(routes=[Mount("/admin", app=asgi_app(ks, authenticate=async_authenticate))])
    api = Api("asgi", ks, host, prefix="/admin" + PREFIX)
    assert api.create()["name"] == "ci"
    assert len(api("GET").data) == 1
    assert api.client.get(PREFIX).status_code == 404  # the host's own 404


def test_wsgi_app_answers_under_a_dispatcher_middleware(ks: Keystile) -> None:
    def host_app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("418 I'm a teapot", [("Content-Type", "text/plain")])
        return [b"host"]

    host = DispatcherMiddleware(host_app, {"/admin": wsgi_app(ks, sync_authenticate)})
    api = Api("wsgi", ks, host, prefix="/admin" + PREFIX)
    assert api.create()["name"] == "ci"
    assert len(api("GET").data) == 1
    assert Client(host).get(PREFIX).status_code == 418


# -- every store -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_create_list_delete_on_every_store(store_url: str, kind: str) -> None:
    engine = make_engine(store_url, scopes={"known": ["results"]})
    try:
        if kind == "asgi":
            app = asgi_app(engine, authenticate=async_authenticate)
            with TestClient(app) as client:
                api = Api(kind, engine, app)
                api.client = client  # one event loop, so one async store, for all requests
                _create_list_delete(api)
                client.portal.call(engine.aclose)
        else:
            _create_list_delete(Api(kind, engine))
    finally:
        engine.close()


def _create_list_delete(api: Api) -> None:
    key = api.create(scopes=["results"], expiresInDays=7, kind="user")
    listed = api("GET").data
    assert [k["id"] for k in listed] == [key["id"]]
    assert ISO_Z.fullmatch(listed[0]["createdAt"]) and ISO_Z.fullmatch(listed[0]["expiresAt"])
    assert api("DELETE", query=f"id={key['id']}").status == 200
    assert api("GET").data == []
