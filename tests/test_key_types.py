"""Publishable and embed keys (SPEC sections 3 and 4 step 8), through both doors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from keystile import KeyInputError, Keystile
from tests.conftest import PEPPER
from tests.doors import DOORS, Door

CONFIG: dict[str, Any] = {
    "store": "memory://",
    "scopes": {"known": ["events:read", "events:write", "standings:read"]},
    "routes": [
        {"path": "/api/v1/events", "methods": ["GET"], "scopes": ["events:read"]},
        {"path": "/embed/{event}/{view}", "methods": ["GET"], "embed": True},
    ],
}
ORIGIN = [("Origin", "https://rhumby.example")]


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
def publishable(engine: Keystile) -> str:
    return str(
        engine.keys.create(
            name="web",
            type="publishable",
            scopes=["events:read"],
            org="acme",
            allowed_origins=["rhumby.example"],
        ).secret
    )


@pytest.fixture(scope="module")
def embed(engine: Keystile) -> str:
    return str(
        engine.keys.create(
            name="standings widget",
            type="embed",
            org="acme",
            allowed_origins=["rhumby.example", "*.club.example"],
            restrictions={"event": ["friday-night-spring-2026"], "view": ["standings"]},
        ).secret
    )


WIDGET = "/embed/friday-night-spring-2026/standings"


def test_type_prefixes(publishable: str, embed: str) -> None:
    assert publishable.startswith("pk_") and embed.startswith("emb_")


def test_publishable_key_works_from_an_allowed_origin_only(door: Door, publishable: str) -> None:
    assert door("GET", "/api/v1/events", ORIGIN, key=publishable).status == 200
    referer = [("Referer", "https://rhumby.example/standings?x=1")]
    assert door("GET", "/api/v1/events", referer, key=publishable).status == 200
    for headers in ([("Origin", "https://evil.example")], []):
        reply = door("GET", "/api/v1/events", headers, key=publishable)
        assert reply.status == 403 and reply.json["code"] == "FORBIDDEN"


def test_publishable_keys_cannot_hold_write_scopes(engine: Keystile) -> None:
    with pytest.raises(KeyInputError) as info:
        engine.keys.create(
            name="x", type="publishable", scopes=["events:write"], allowed_origins=["a.example"]
        )
    assert info.value.field == "scopes"
    with pytest.raises(KeyInputError) as info:
        engine.keys.create(name="x", type="publishable", scopes=["events:read"])
    assert info.value.field == "allowed_origins"


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("bearer", id="bearer"),
        pytest.param("query", id="query-token"),
        pytest.param("header", id="x-embed-token"),
    ],
)
def test_embed_key_reads_its_own_resources(door: Door, embed: str, how: str) -> None:
    headers = [("Origin", "https://live.club.example")]
    query = ""
    if how == "bearer":
        headers.append(("Authorization", f"Bearer {embed}"))
    elif how == "query":
        query = f"token={embed}&theme=dark"
    else:
        headers.append(("X-Embed-Token", embed))
    reply = door("GET", WIDGET, headers, query=query)
    assert reply.status == 200 and reply.seen["key"] is not None
    # The token is removed from what the app (and its logs) see.
    assert embed not in reply.seen["query"] and "x-embed-token" not in reply.seen["headers"]
    if how == "query":
        assert reply.seen["query"] == "theme=dark"


@pytest.mark.parametrize(
    ("method", "path", "origin"),
    [
        pytest.param(
            "GET", "/embed/another-event/standings", "https://rhumby.example", id="other-event"
        ),
        pytest.param(
            "GET",
            "/embed/friday-night-spring-2026/results",
            "https://rhumby.example",
            id="other-view",
        ),
        pytest.param("GET", "/api/v1/events", "https://rhumby.example", id="not-an-embed-route"),
        pytest.param("GET", WIDGET, "https://evil.example", id="other-origin"),
        pytest.param("GET", WIDGET, None, id="no-origin"),
    ],
)
def test_embed_key_is_refused_outside_its_bounds(
    door: Door, embed: str, method: str, path: str, origin: str | None
) -> None:
    headers = [("Origin", origin)] if origin else []
    reply = door(method, path, headers, key=embed)
    assert reply.status == 403 and reply.json["code"] == "FORBIDDEN"


def test_embed_routes_accept_get_and_head_only(engine: Keystile) -> None:
    from keystile import ConfigError

    with pytest.raises(ConfigError):
        Keystile(
            {**CONFIG, "routes": [{"path": "/e/{x}", "methods": ["POST"], "embed": True}]},
            pepper=PEPPER,
        )


def test_token_parameter_is_not_a_credential_elsewhere(door: Door, embed: str) -> None:
    reply = door("GET", "/api/v1/events", ORIGIN, query=f"token={embed}")
    assert reply.status == 401 and reply.json["error"] == "API key required"


def test_secret_key_sent_as_embed_token_is_refused(door: Door, engine: Keystile) -> None:
    secret = engine.keys.create(name="s", scopes=["events:read"], org="acme").secret
    reply = door("GET", WIDGET, ORIGIN, query=f"token={secret}")
    assert reply.status == 403 and reply.json["code"] == "FORBIDDEN"
