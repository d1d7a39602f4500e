"""What keystile reads of a request, end to end through both doors.

The parsers are tested one by one in ``test_sansio.py``; here each reading
is checked where a user meets it: an app mounted under a prefix (ASGI
``root_path``, WSGI ``SCRIPT_NAME``), percent-encoded paths, a key in the
query string, and credentials at the size limit.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest

from keystile import Keystile
from tests.conftest import PEPPER
from tests.doors import DOORS, Door

CONFIG: dict[str, Any] = {
    "store": "memory://",
    "routes": [
        {"path": "/", "public": True},
        {"path": "/health", "public": True},
        {"path": "/api/v1/events", "methods": ["GET"], "scopes": ["events:read"]},
        {"path": "/files/{name}", "scopes": ["events:read"]},
    ],
    "default": "deny",
}


@pytest.fixture(scope="module")
def engine() -> Iterator[Keystile]:
    ks = Keystile(CONFIG, pepper=PEPPER)
    yield ks
    ks.close()


@pytest.fixture(scope="module")
def query_engine() -> Iterator[Keystile]:
    config = {**CONFIG, "credentials": ["bearer", "x-api-key", "query:api_key"]}
    ks = Keystile(config, pepper=PEPPER)
    yield ks
    ks.close()


@pytest.fixture(scope="module")
def scheme_engine() -> Iterator[Keystile]:
    config = {**CONFIG, "credentials": ["bearer", "x-api-key", "scheme:Api-Key"]}
    ks = Keystile(config, pepper=PEPPER)
    yield ks
    ks.close()


@pytest.fixture(params=DOORS)
def door(request: pytest.FixtureRequest, engine: Keystile) -> Iterator[Door]:
    with Door(request.param, engine) as door:
        yield door


@pytest.fixture(scope="module")
def reader(engine: Keystile) -> Any:
    return engine.keys.create(name="reader", scopes=["events:read"], org="acme")


def code(reply: Any) -> str:
    """The refusal's code; for a pass, OK with a principal, PUBLIC without one."""
    if reply.status != 200:
        return str(reply.json["code"])
    return "PUBLIC" if reply.seen["key"] is None else "OK"


# Each case: the mount point (raw, as sent; "" for none), the path under it,
# then what a request with a reader key and one without get (PUBLIC: passed
# without reading a key, as public routes do). The route is
# the one of the path under the mount point, decoded, trailing slash or not;
# 401 without a key shows that a keyed rule governs the request (an
# unmatched path is 403 under `default: deny`).
PATHS = [
    pytest.param("/svc", "/api/v1/events", "OK", "UNAUTHORIZED", id="mounted"),
    pytest.param("/svc", "/health", "PUBLIC", "PUBLIC", id="mounted-public"),
    pytest.param("/svc", "", "PUBLIC", "PUBLIC", id="the-mount-point"),
    pytest.param("/svc", "/", "PUBLIC", "PUBLIC", id="the-mount-point-with-slash"),
    pytest.param("/a/b", "/api/v1/events", "OK", "UNAUTHORIZED", id="two-segment-mount"),
    pytest.param("/api", "/api/v1/events", "OK", "UNAUTHORIZED", id="mount-repeated-in-path"),
    pytest.param("/svc", "/svc/api/v1/events", "FORBIDDEN", "FORBIDDEN", id="stripped-once"),
    pytest.param("/my%20svc", "/api/v1/events", "OK", "UNAUTHORIZED", id="encoded-mount"),
    pytest.param("/svc", "/%61pi/v1/events/", "OK", "UNAUTHORIZED", id="mounted-encoded"),
    pytest.param("/svc", "/api/../api/v1/events", "BAD_REQUEST", "BAD_REQUEST", id="mounted-dots"),
    pytest.param("/svc", "/files/a%2Fb", "BAD_REQUEST", "BAD_REQUEST", id="mounted-enc-slash"),
    pytest.param("", "/%61pi/%761/%65vents", "OK", "UNAUTHORIZED", id="every-segment-encoded"),
    pytest.param("", "/%61pi/%761/%65vents/", "OK", "UNAUTHORIZED", id="encoded-trailing-slash"),
    pytest.param("", "/files/caf%C3%A9%20au%20lait", "OK", "UNAUTHORIZED", id="encoded-param"),
    pytest.param("", "/files/caf%C3%A9/", "OK", "UNAUTHORIZED", id="encoded-param-slash"),
    pytest.param("", "/files/a%2Fb", "BAD_REQUEST", "BAD_REQUEST", id="encoded-slash"),
]


@pytest.mark.parametrize(("root", "path", "keyed", "anonymous"), PATHS)
def test_the_route_is_the_one_of_the_decoded_path_under_the_mount_point(
    door: Door, reader: Any, root: str, path: str, keyed: str, anonymous: str
) -> None:
    with_key = door("GET", path, key=reader.secret, root=root)
    assert code(with_key) == keyed, with_key.body
    if keyed == "OK":
        assert with_key.seen["key"] == reader.id
    assert code(door("GET", path, root=root)) == anonymous


def test_a_key_in_the_query_is_read_by_its_configured_name(query_engine: Keystile) -> None:
    new = query_engine.keys.create(name="q", scopes=["events:read"], org="acme")
    for kind in DOORS:
        with Door(kind, query_engine) as door:
            reply = door("GET", "/api/v1/events", query=f"api_key={new.secret}")
            assert reply.status == 200 and reply.seen["key"] == new.id, kind
            reply = door("GET", "/api/v1/events", query=f"x=1&api_key={new.secret}&y=2")
            assert reply.status == 200 and reply.seen["key"] == new.id, kind
            for other in (f"apikey={new.secret}", f"pi_key={new.secret}", f"key={new.secret}"):
                assert code(door("GET", "/api/v1/events", query=other)) == "UNAUTHORIZED"


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        pytest.param("api_key={k}&api_key={k}", [], id="twice"),
        pytest.param("api_key=", [], id="empty"),
        pytest.param("api_key={k}", [("Authorization", "Bearer {k}")], id="and-a-bearer"),
        pytest.param("api_key={k}%2C{k}", [], id="comma"),
    ],
)
def test_a_malformed_query_key_is_400_invalid_request(
    query_engine: Keystile, query: str, headers: list[tuple[str, str]]
) -> None:
    secret = query_engine.keys.create(name="q", scopes=["events:read"], org="acme").secret
    for kind in DOORS:
        with Door(kind, query_engine) as door:
            reply = door(
                "GET",
                "/api/v1/events",
                [(n, v.format(k=secret)) for n, v in headers],
                query=query.format(k=secret),
            )
            assert code(reply) == "BAD_REQUEST", kind
            assert 'error="invalid_request"' in (reply.header("www-authenticate") or "")
            assert secret not in reply.body.decode()


def test_a_query_key_is_not_read_unless_configured(door: Door, reader: Any) -> None:
    reply = door("GET", "/api/v1/events", query=f"api_key={reader.secret}")
    assert code(reply) == "UNAUTHORIZED"
    assert reply.header("www-authenticate") == 'Bearer realm="api"'  # no key was read


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(("Authorization", "Bearer  {k}"), id="bearer-two-spaces"),
        pytest.param(("Authorization", "bearer {k}"), id="bearer-lower-case"),
        pytest.param(("x-api-key", " {k} "), id="x-api-key-padded"),
    ],
)
def test_a_credential_with_extra_spaces_is_read(
    door: Door, reader: Any, header: tuple[str, str]
) -> None:
    reply = door("GET", "/api/v1/events", [(header[0], header[1].format(k=reader.secret))])
    assert reply.status == 200 and reply.seen["key"] == reader.id


# MAX_CREDENTIAL_BYTES (512) bounds each place's value as sent: the whole
# Authorization value ("Bearer " included), the x-api-key value, the query
# parameter's value. At the limit the value is read (and, being no key of
# ours, is refused as an invalid token); past it the request is malformed.
@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param(511, "UNAUTHORIZED", id="511"),
        pytest.param(512, "UNAUTHORIZED", id="512"),
        pytest.param(513, "BAD_REQUEST", id="513"),
    ],
)
@pytest.mark.parametrize(
    "place",
    [
        pytest.param("bearer", id="bearer"),
        pytest.param("x-api-key", id="x-api-key"),
        pytest.param("query", id="query"),
    ],
)
def test_credential_size_limit_is_512_bytes_per_value(
    query_engine: Keystile, place: str, size: int, expected: str
) -> None:
    headers: list[tuple[str, str]] = []
    query = ""
    if place == "bearer":
        headers = [("Authorization", "Bearer " + "a" * (size - len("Bearer ")))]
    elif place == "x-api-key":
        headers = [("x-api-key", "a" * size)]
    else:
        query = "api_key=" + "a" * size
    for kind in DOORS:
        with Door(kind, query_engine) as door:
            reply = door("GET", "/api/v1/events", headers, query=query)
            assert code(reply) == expected, kind
            error = "invalid_token" if expected == "UNAUTHORIZED" else "invalid_request"
            assert f'error="{error}"' in (reply.header("www-authenticate") or "")


# `credentials: [..., "scheme:Api-Key"]` reads `Authorization: Api-Key KEY`
# (how djangorestframework-api-key's clients send their keys) with Bearer's
# checks; an engine that does not list it answers as it does for Basic.
@pytest.mark.parametrize(
    ("value", "listed", "unlisted"),
    [
        pytest.param("Api-Key {k}", "OK", "UNAUTHORIZED", id="api-key"),
        pytest.param("api-key {k}", "OK", "UNAUTHORIZED", id="scheme-any-case"),
        pytest.param("API-KEY  {k}", "OK", "UNAUTHORIZED", id="two-spaces"),
        pytest.param("Bearer {k}", "OK", "OK", id="bearer-still-read"),
        pytest.param("Api-Key", "BAD_REQUEST", "UNAUTHORIZED", id="no-token"),
        pytest.param("Api-Key {k} {k}", "BAD_REQUEST", "UNAUTHORIZED", id="two-tokens"),
        pytest.param("Api-Key {k},{k}", "BAD_REQUEST", "BAD_REQUEST", id="comma"),
        pytest.param("Api-Key sk_nope", "UNAUTHORIZED", "UNAUTHORIZED", id="unknown-key"),
        pytest.param("Token {k}", "UNAUTHORIZED", "UNAUTHORIZED", id="another-scheme"),
    ],
)
@pytest.mark.parametrize("kind", DOORS)
def test_a_listed_authorization_scheme_carries_the_key(
    scheme_engine: Keystile, engine: Keystile, kind: str, value: str, listed: str, unlisted: str
) -> None:
    for ks, expected in ((scheme_engine, listed), (engine, unlisted)):
        secret = ks.keys.create(name="scheme", scopes=["events:read"], org="acme").secret
        with Door(kind, ks) as door:
            reply = door("GET", "/api/v1/events", [("Authorization", value.format(k=secret))])
        assert code(reply) == expected, reply.body
        assert secret not in reply.body.decode()
        if expected == "BAD_REQUEST":
            assert 'error="invalid_request"' in (reply.header("www-authenticate") or "")


@pytest.mark.parametrize("kind", DOORS)
def test_a_scheme_credential_beside_an_x_api_key_is_two_credentials(
    scheme_engine: Keystile, kind: str
) -> None:
    secret = scheme_engine.keys.create(name="two", scopes=["events:read"], org="acme").secret
    headers = [("Authorization", f"Api-Key {secret}"), ("x-api-key", secret)]
    with Door(kind, scheme_engine) as door:
        assert code(door("GET", "/api/v1/events", headers)) == "BAD_REQUEST"


# ASGI headers as the server sent them: the lazy reading (unique lower-case
# names, as ASGI servers give them) and the full one (anything else) must
# agree on every answer, repeats and capitals included.
ASGI_HEADER_CASES = [
    pytest.param(
        [(b"host", b"h"), (b"authorization", b"Bearer KEY")], "ScopeHeaders", 200, id="lazy"
    ),
    pytest.param([(b"Authorization", b"Bearer KEY")], "HeaderMap", 200, id="capitals"),
    pytest.param(
        [(b"authorization", b"Bearer KEY"), (b"authorization", b"Bearer KEY")],
        "HeaderMap",
        400,
        id="repeated",
    ),
    pytest.param(
        [(b"authorization", b"Bearer KEY"), (b"x-api-key", b"KEY")],
        "ScopeHeaders",
        400,
        id="two-ways",
    ),
    pytest.param(
        [(b"x-api-key", b"KEY"), (b"cookie", b"s=" + b"x" * 2000)], "ScopeHeaders", 200, id="cookie"
    ),
    pytest.param([(b"host", b"h")], "ScopeHeaders", 401, id="none"),
    pytest.param(
        [(b"authorization", b"Bearer KEY"), (b"\xc0x", b"v")], "HeaderMap", 200, id="latin-1-name"
    ),
]


@pytest.mark.parametrize(("sent", "reader", "status"), ASGI_HEADER_CASES)
def test_asgi_headers_read_lazily_or_in_full_give_the_same_answer(
    engine: Keystile, sent: list[tuple[bytes, bytes]], reader: str, status: int
) -> None:
    from keystile.asgi import view_from_scope
    from keystile.pipeline import Refusal

    secret = engine.keys.create(name="h", scopes=["events:read"]).secret.encode()
    headers = [(n, v.replace(b"KEY", secret)) for n, v in sent]
    scope = {"type": "http", "method": "GET", "path": "/api/v1/events", "headers": headers}
    view = view_from_scope(scope)
    assert type(view.headers).__name__ == reader
    decision = engine.decide(view)
    assert (decision.status if isinstance(decision, Refusal) else 200) == status
    assert secret.decode() not in repr(view)  # names only


@pytest.mark.parametrize("name", [b"x-keystile-org", b"X-Keystile-Org"], ids=["lazy", "capitals"])
def test_asgi_drops_reserved_headers_read_either_way(
    engine: Keystile, reader: Any, name: bytes
) -> None:
    import asyncio
    import json

    from keystile.asgi import KeystileMiddleware
    from tests.doors import echo_asgi

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/events",
        "headers": [(b"authorization", f"Bearer {reader.secret}".encode()), (name, b"forged")],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(KeystileMiddleware(echo_asgi, engine)(scope, receive, send))
    assert sent[0]["status"] == 200
    seen = json.loads(sent[1]["body"])["headers"]
    assert seen == ["authorization"]


@pytest.mark.parametrize(
    ("names", "reserved"),
    [
        ([b"host", b"accept"], False),
        ([b"host", b"x-keystile-org"], True),
        # The joined names hold the prefix across two names: no name starts with it.
        ([b"x-keystile", b"-org"], False),
        ([b"ax-keystile-org"], False),
        ([b"X-Keystile-Org"], True),  # capitals: read in full, then looked at
    ],
)
def test_asgi_view_knows_of_reserved_headers_only_by_their_names_start(
    names: list[bytes], reserved: bool
) -> None:
    from keystile.asgi import view_from_scope

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(n, b"v") for n in names]}
    # Known once the view is built, either way it was read: the door reads the flag.
    assert view_from_scope(scope).reserved is reserved
