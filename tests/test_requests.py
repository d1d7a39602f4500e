"""SPEC sections 4 and 5 through both doors: every status, header and hostile trick."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from keystile import Keystile
from tests.conftest import PEPPER
from tests.doors import DOORS, Door

CONFIG: dict[str, Any] = {
    "store": "memory://",
    "limits": {"key": "1000/hour"},
    "scopes": {
        "implies": {"admin": ["*"], "events:write": ["events:read"]},
        "destructive": ["servers:delete"],
        "known": ["results", "members:read", "servers:write"],
    },
    "routes": [
        {"path": "/health", "public": True},
        {"path": "/api/v1/events", "methods": ["GET"], "scopes": ["events:read"]},
        {
            "path": "/api/v1/events/{event_id}",
            "methods": ["PUT", "PATCH"],
            "scopes": ["events:write"],
        },
        {
            "path": "/api/v1/events/{event_id}/results",
            "methods": ["POST"],
            "scopes_any": ["results", "admin"],
        },
        {"path": "/api/v1/orgs/{org}/members", "scopes": ["members:read"], "org_param": "org"},
        {"path": "/api/v1/servers/{id}", "methods": ["DELETE"], "scopes": ["servers:delete"]},
        {"path": "/api/v1/servers", "methods": ["POST"], "scopes": ["servers:write"]},
    ],
    "default": "deny",
}


@pytest.fixture(scope="module")
def engine() -> Iterator[Keystile]:
    ks = Keystile(CONFIG, pepper=PEPPER)
    yield ks
    ks.close()


@pytest.fixture(params=DOORS)
def door(request: pytest.FixtureRequest, engine: Keystile) -> Iterator[Door]:
    with Door(request.param, engine) as door:
        yield door


@pytest.fixture(scope="module")
def reader(engine: Keystile) -> str:
    return str(engine.keys.create(name="reader", scopes=["events:read"], org="acme").secret)


@pytest.fixture(scope="module")
def writer(engine: Keystile) -> str:
    return str(engine.keys.create(name="writer", scopes=["events:write"], org="acme").secret)


def assert_refusal(reply: Any, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert reply.header("content-type") == "application/json"
    assert reply.header("cache-control") == "no-store"
    body = reply.json
    assert body["code"] == code and body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    return dict(body)


# -- SPEC section 5, row by row ------------------------------------------------------


def test_public_route_passes_without_a_key_and_counts_nothing(door: Door) -> None:
    reply = door("GET", "/health")
    assert reply.status == 200 and reply.seen["key"] is None
    assert reply.header("x-ratelimit-limit") is None


def test_known_key_with_scope_reaches_the_app_as_principal(door: Door, engine: Any) -> None:
    new = engine.keys.create(name="p", scopes=["events:read"], org="acme")
    reply = door("GET", "/api/v1/events", key=new.secret)
    assert reply.status == 200
    assert reply.seen["key"] == new.id
    assert reply.header("x-ratelimit-limit") == "1000"
    assert reply.header("x-ratelimit-remaining") == "999"
    assert (reply.header("x-ratelimit-reset") or "").isdigit()


def test_x_api_key_header_is_read_too(door: Door, reader: str) -> None:
    assert door("GET", "/api/v1/events", [("x-api-key", reader)]).status == 200


def test_bearer_scheme_is_case_insensitive(door: Door, reader: str) -> None:
    assert door("GET", "/api/v1/events", [("Authorization", f"bEaReR {reader}")]).status == 200


def test_missing_key_is_401_with_a_bare_challenge(door: Door) -> None:
    reply = door("GET", "/api/v1/events")
    body = assert_refusal(reply, 401, "UNAUTHORIZED")
    assert body["error"] == "API key required"
    assert reply.header("www-authenticate") == 'Bearer realm="api"'


def test_unknown_key_and_bad_checksum_are_refused_alike(door: Door, engine: Any) -> None:
    made_up = engine.formats["secret"].generate()  # valid checksum, never stored
    real = engine.keys.create(name="x", org="acme").secret
    bad_checksum = real[:-1] + ("A" if real[-1] != "A" else "B")
    replies = [door("GET", "/api/v1/events", key=k) for k in (made_up, bad_checksum)]
    for reply in replies:
        assert_refusal(reply, 401, "UNAUTHORIZED")
        assert reply.header("www-authenticate") == 'Bearer realm="api", error="invalid_token"'
    assert replies[0].body == replies[1].body
    assert replies[0].headers == replies[1].headers


def test_another_scheme_counts_as_no_key(door: Door) -> None:
    reply = door("GET", "/api/v1/events", [("Authorization", "Basic dXNlcjpwYXNz")])
    assert assert_refusal(reply, 401, "UNAUTHORIZED")["error"] == "API key required"


def test_revoked_key_is_refused_in_the_same_process(door: Door, engine: Any) -> None:
    new = engine.keys.create(name="r", scopes=["events:read"], org="acme")
    assert door("GET", "/api/v1/events", key=new.secret).status == 200
    engine.keys.revoke(new.id)
    body = assert_refusal(door("GET", "/api/v1/events", key=new.secret), 401, "UNAUTHORIZED")
    assert body["error"] == "API key has been revoked"


def test_expired_key_is_refused(door: Door, engine: Any) -> None:
    new = engine.keys.create(name="e", scopes=["events:read"], org="acme", expires_in_days=1)
    engine.store.execute("update", new.id, {"expires_at": engine.now()})
    engine.forget(new.record)
    body = assert_refusal(door("GET", "/api/v1/events", key=new.secret), 401, "UNAUTHORIZED")
    assert body["error"] == "API key has expired"


def test_missing_scope_is_403_with_required_scopes(door: Door, reader: str) -> None:
    reply = door("PUT", "/api/v1/events/42", key=reader)
    body = assert_refusal(reply, 403, "INSUFFICIENT_SCOPE")
    assert body["required_scopes"] == ["events:write"]
    assert body["error"] == "API key lacks the required scope: events:write"
    assert reply.header("www-authenticate") == (
        'Bearer error="insufficient_scope", scope="events:write"'
    )


def test_implied_scope_grants(door: Door, writer: str) -> None:
    assert door("GET", "/api/v1/events", key=writer).status == 200  # write implies read
    assert door("PATCH", "/api/v1/events/7", key=writer).status == 200


def test_scopes_any_needs_one_of_them(door: Door, engine: Any, reader: str) -> None:
    results = engine.keys.create(name="res", scopes=["results"], org="acme").secret
    admin = engine.keys.create(name="adm", scopes=["admin"], org="acme").secret
    assert door("POST", "/api/v1/events/1/results", key=results).status == 200
    assert door("POST", "/api/v1/events/1/results", key=admin).status == 200
    body = assert_refusal(
        door("POST", "/api/v1/events/1/results", key=reader), 403, "INSUFFICIENT_SCOPE"
    )
    assert body["required_scopes"] == ["results", "admin"]


def test_destructive_scope_is_not_granted_by_a_resource_wildcard(door: Door, engine: Any) -> None:
    wild = engine.keys.create(name="w", scopes=["servers:*"], org="acme").secret
    star = engine.keys.create(name="s", scopes=["*"], org="acme").secret
    assert door("POST", "/api/v1/servers", key=wild).status == 200
    assert_refusal(door("DELETE", "/api/v1/servers/9", key=wild), 403, "INSUFFICIENT_SCOPE")
    assert door("DELETE", "/api/v1/servers/9", key=star).status == 200


def test_unmatched_route_is_forbidden_under_default_deny(door: Door, reader: str) -> None:
    assert_refusal(door("GET", "/api/v1/unknown", key=reader), 403, "FORBIDDEN")
    assert_refusal(door("GET", "/api/v1/unknown"), 403, "FORBIDDEN")


def test_key_of_another_org_is_forbidden_on_org_routes(door: Door, engine: Any) -> None:
    key = engine.keys.create(name="m", scopes=["members:read"], org="acme").secret
    assert door("GET", "/api/v1/orgs/acme/members", key=key).status == 200
    assert_refusal(door("GET", "/api/v1/orgs/globex/members", key=key), 403, "FORBIDDEN")


def test_rate_limit_refusal_has_retry_after(door: Door) -> None:
    ks = Keystile({**CONFIG, "limits": {"key": "2/minute"}}, pepper=PEPPER)
    with Door(door.kind, ks) as local:
        key = ks.keys.create(name="l", scopes=["events:read"], org="acme").secret
        assert [local("GET", "/api/v1/events", key=key).status for _ in range(2)] == [200, 200]
        reply = local("GET", "/api/v1/events", key=key)
        body = assert_refusal(reply, 429, "RATE_LIMITED")
        assert 1 <= body["retry_after"] <= 60
        assert reply.header("retry-after") == str(body["retry_after"])
        assert reply.header("x-ratelimit-remaining") == "0"
        assert reply.header("x-ratelimit-limit") == "2"
    ks.close()


def test_problem_json_when_configured(door: Door) -> None:
    ks = Keystile({**CONFIG, "errors": "problem"}, pepper=PEPPER)
    with Door(door.kind, ks) as local:
        reply = local("GET", "/api/v1/events")
        assert reply.status == 401
        assert reply.header("content-type") == "application/problem+json"
        body = reply.json
        assert body["status"] == 401 and body["code"] == "UNAUTHORIZED"
        assert body["title"] == "Unauthorized" and body["detail"] == "API key required"
        assert body["type"].endswith("unauthorized")
    ks.close()


# -- SPEC section 4: requests that must never get through --------------------------

HOSTILE_PATHS = [
    pytest.param(b"/api/v1/../v1/events", id="dot-dot"),
    pytest.param(b"/api/v1/./events", id="dot"),
    pytest.param(b"/api/v1/%2e%2e/v1/events", id="encoded-dot-dot"),
    pytest.param(b"/api/v1/%2E%2e/v1/events", id="mixed-case-encoded-dot-dot"),
    pytest.param(b"/api/v1//events", id="empty-segment"),
    pytest.param(b"/api/v1/events%2F1", id="encoded-slash"),
    pytest.param(b"/api/v1/events%2f1", id="encoded-slash-lower"),
    pytest.param(b"/api/v1/events%5c1", id="encoded-backslash"),
    pytest.param(b"/api/v1/events\\..\\x", id="backslash"),
    pytest.param(b"/api/v1/events%00", id="encoded-nul"),
    pytest.param(b"/api/v1/ev%ffents", id="invalid-utf8"),
    pytest.param(b"/api/v1/events%0a", id="encoded-newline"),
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_malformed_path_is_400_before_matching(door: Door, path: bytes, reader: str) -> None:
    assert_refusal(door("GET", path, key=reader), 400, "BAD_REQUEST")
    assert_refusal(door("GET", path), 400, "BAD_REQUEST")


def test_trailing_slash_matches_the_same_rule(door: Door, reader: str) -> None:
    assert door("GET", "/api/v1/events/", key=reader).status == 200
    assert_refusal(door("GET", "/api/v1/events/"), 401, "UNAUTHORIZED")


def test_head_is_checked_as_get(door: Door, reader: str) -> None:
    assert_refusal(door("HEAD", "/api/v1/events"), 401, "UNAUTHORIZED")
    assert door("HEAD", "/api/v1/events", key=reader).status == 200


def test_cors_preflight_passes_without_a_key(door: Door) -> None:
    reply = door(
        "OPTIONS",
        "/api/v1/events",
        [("Origin", "https://app.example"), ("Access-Control-Request-Method", "GET")],
    )
    assert reply.status == 200 and reply.seen["key"] is None


def test_options_without_preflight_headers_is_not_a_bypass(door: Door, reader: str) -> None:
    # Without Access-Control-Request-Method it is a plain OPTIONS request,
    # checked like any other: no rule allows OPTIONS on /api/v1/events...
    origin = [("Origin", "https://x.example")]
    assert_refusal(door("OPTIONS", "/api/v1/events", origin), 403, "FORBIDDEN")
    assert_refusal(door("OPTIONS", "/api/v1/events", origin, key=reader), 403, "FORBIDDEN")
    # ...and where a rule allows every method, it needs a key as GET does.
    members = "/api/v1/orgs/acme/members"
    refused = assert_refusal(door("OPTIONS", members, origin), 401, "UNAUTHORIZED")
    assert refused["error"] == "API key required"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(("X-HTTP-Method-Override", "GET"), id="x-http-method-override"),
        pytest.param(("X-Method-Override", "GET"), id="x-method-override"),
        pytest.param(("X-Original-URL", "/health"), id="x-original-url"),
        pytest.param(("X-Rewrite-URL", "/health"), id="x-rewrite-url"),
    ],
)
def test_override_headers_change_nothing(door: Door, reader: str, header: tuple[str, str]) -> None:
    assert_refusal(door("PUT", "/api/v1/events/1", [header], key=reader), 403, "INSUFFICIENT_SCOPE")
    assert_refusal(door("PUT", "/api/v1/events/1", [header]), 401, "UNAUTHORIZED")


CREDENTIAL_TRICKS = [
    pytest.param(lambda k: [("Authorization", f"Bearer {k}"), ("x-api-key", k)], id="both"),
    pytest.param(
        lambda k: [("Authorization", f"Bearer {k}"), ("Authorization", f"Bearer {k}")],
        id="repeated-authorization",
    ),
    pytest.param(lambda k: [("x-api-key", k), ("x-api-key", k)], id="repeated-x-api-key"),
    pytest.param(lambda k: [("x-api-key", k + "," + k)], id="comma"),
    pytest.param(lambda k: [("Authorization", "Bearer " + "a" * 600)], id="over-512-bytes"),
    pytest.param(lambda k: [("x-api-key", k + "\x01")], id="control-character"),
    pytest.param(lambda k: [("Authorization", "Bearer ")], id="empty-bearer"),
    pytest.param(lambda k: [("Authorization", f"Bearer {k} extra")], id="bearer-two-tokens"),
    pytest.param(lambda k: [("x-api-key", "")], id="empty-x-api-key"),
    pytest.param(lambda k: [("x-api-key", f"{k} extra")], id="x-api-key-two-tokens"),
]


@pytest.mark.parametrize("make", CREDENTIAL_TRICKS)
def test_malformed_credentials_are_400_invalid_request(door: Door, reader: str, make: Any) -> None:
    reply = door("GET", "/api/v1/events", make(reader))
    assert_refusal(reply, 400, "BAD_REQUEST")
    assert 'error="invalid_request"' in (reply.header("www-authenticate") or "")
    assert reader not in reply.body.decode()


def test_websocket_is_checked_like_get(engine: Any, reader: str) -> None:
    import asyncio

    from keystile.asgi import KeystileMiddleware

    reached: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["state"]["api_key"].id)
        await send({"type": "websocket.accept"})

    middleware = KeystileMiddleware(app, engine)

    def connect(headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {
            "type": "websocket",
            "path": "/api/v1/events",
            "raw_path": b"/api/v1/events",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 1),
        }
        asyncio.run(middleware(scope, receive, send))
        return sent

    assert connect([]) == [{"type": "websocket.close", "code": 1008}]
    assert reached == []
    assert connect([(b"authorization", f"Bearer {reader}".encode())]) == [
        {"type": "websocket.accept"}
    ]
    assert len(reached) == 1


def test_a_shared_lifespan_state_never_carries_a_principal(engine: Any, reader: str) -> None:
    # The ASGI spec gives each request a copy of the lifespan state; a server
    # that handed out the one dict instead must still not leak a principal
    # from one request into the next.
    import asyncio

    from keystile.asgi import KeystileMiddleware

    shared: dict[str, Any] = {"db": "pool"}
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["state"].get("api_key"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = KeystileMiddleware(app, engine)

    def get(path: str, headers: list[tuple[bytes, bytes]]) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request"}

        async def send(message: Any) -> None:
            pass

        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "state": shared,
        }
        asyncio.run(middleware(scope, receive, send))

    get("/api/v1/events", [(b"authorization", f"Bearer {reader}".encode())])
    get("/health", [])
    assert seen[0] is not None and seen[0].name == "reader"
    assert seen[1] is None  # the public request saw no principal
    assert shared == {"db": "pool"}


def test_lifespan_passes_through_and_flushes_last_used(engine: Any, reader: str) -> None:
    import asyncio

    from keystile.asgi import KeystileMiddleware

    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    got: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        got.append((await receive())["type"])
        got.append((await receive())["type"])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: Any) -> None:
        raise AssertionError("the app sent nothing")

    key = engine.keys.create(name="lifespan", scopes=["events:read"], org="acme")
    Door("wsgi", engine)("GET", "/api/v1/events", key=key.secret)
    assert engine.keys.get(key.id).last_used_at is None
    asyncio.run(KeystileMiddleware(app, engine)({"type": "lifespan"}, receive, send))
    assert got == ["lifespan.startup", "lifespan.shutdown"]
    assert engine.keys.get(key.id).last_used_at is not None


def test_malformed_path_carries_no_credential_challenge(door: Door, reader: str) -> None:
    for key in (None, reader):
        reply = door("GET", b"/a/../b", key=key)
        assert_refusal(reply, 400, "BAD_REQUEST")
        assert reply.header("www-authenticate") is None


def test_headers_that_pose_as_keystile_never_reach_the_app(door: Door, reader: str) -> None:
    posing = [("X-Keystile-Key-Id", "key_admin"), ("X-Keystile-Scopes", "*")]
    reply = door("GET", "/api/v1/events", [*posing, ("X-Other", "kept")], key=reader)
    assert reply.status == 200
    assert not [h for h in reply.seen["headers"] if h.startswith("x-keystile-")]
    assert "x-other" in reply.seen["headers"]
